import { test } from 'node:test';
import assert from 'node:assert/strict';
import { server, browser, useServer, uniqueEmail, signUp, signIn, setUpTwoFactor, PASSWORD } from './harness.mjs';

useServer();

test('sign up, land on the overview, log out, log in again', async () => {
  const page = await browser.newPage();
  const email = uniqueEmail('alice');
  await signUp(page, server.url, email);
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  assert.equal(await page.getByTestId('current-user').textContent(), email);

  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(server.url + '/login');
  // The console is closed again: a direct visit goes back to sign-in.
  await page.goto(server.url + '/console/settings');
  assert.match(page.url(), /\/login\?next=%2Fconsole%2Fsettings|\/login\?next=\/console\/settings/);

  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(server.url + '/console/settings');
  await page.getByRole('heading', { name: 'Settings' }).waitFor();
  await page.close();
});

test('wrong password gets a clear message; a taken email is not revealed, its owner is told', async () => {
  const page = await browser.newPage();
  const email = uniqueEmail('bob');
  await signUp(page, server.url, email);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(server.url + '/login');

  await signIn(page, server.url, email, 'Not-the-password-1');
  await page.getByRole('alert').filter({ hasText: 'Wrong email or password.' }).waitFor();

  await page.goto(server.url + '/signup');
  await page.getByLabel('Email').fill(email.toUpperCase());
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await page.getByLabel('Repeat password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.waitForURL(server.url + '/signup/sent');
  await page.getByRole('heading', { name: 'Check your email' }).waitFor();
  const told = await server.mail.nth(email, 2);
  assert.equal(told.subject, 'You already have a CloudRouter account');
  assert.match(told.text, /\/password\/forgot/);
  await page.close();
});

test('forgot password: the mailed link sets a new one, signs out everywhere, and works once', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const email = uniqueEmail('forgetful');
  await signUp(page, server.url, email);
  const elsewhere = await (await browser.newContext()).newPage();
  await signIn(elsewhere, server.url, email);
  await elsewhere.waitForURL(server.url + '/console');

  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(server.url + '/login');
  await page.getByRole('link', { name: 'Forgot your password?' }).click();
  await page.waitForURL(server.url + '/password/forgot');
  await page.getByLabel('Email').fill(email);
  await page.getByRole('button', { name: 'Send the link' }).click();
  await page.waitForURL(server.url + '/password/sent');

  const link = await server.mail.link(email, 2, '/password/reset');
  await page.goto(link);
  await page.locator('body[data-hydrated]').waitFor();
  await page.getByLabel('New password').fill('Fresh-start-2026');
  await page.getByLabel('Repeat password').fill('Fresh-start-2026');
  await page.getByRole('button', { name: 'Set the new password' }).click();
  await page.waitForURL(server.url + '/login?reset=1');
  await page.getByRole('status').filter({ hasText: 'Your password is changed.' }).waitFor();

  // the other browser was signed out by the reset
  await elsewhere.goto(server.url + '/console');
  assert.match(elsewhere.url(), /\/login/);
  await signIn(page, server.url, email, 'Fresh-start-2026');
  await page.waitForURL(server.url + '/console');

  await page.goto(link);
  await page.getByRole('alert').filter({ hasText: 'This link has expired or was already used.' }).waitFor();
  await context.close();
});

test('a customer is refused from the admin pages; staff get in', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await signUp(page, server.url, uniqueEmail('carol'));
  const response = await page.goto(server.url + '/console/admin');
  assert.equal(response.status(), 403);
  await page.getByRole('alert').filter({ hasText: 'support staff only' }).waitFor();
  assert.equal(await page.getByRole('link', { name: 'Upstreams' }).count(), 0);
  await context.close();

  const staffEmail = uniqueEmail('staff');
  server.cli('admin', 'create', '--email', staffEmail, '--password', PASSWORD);
  const staffContext = await browser.newContext();
  const staffPage = await staffContext.newPage();
  await signIn(staffPage, server.url, staffEmail);
  await staffPage.waitForURL(server.url + '/console');
  // Staff without two-factor sign-in are sent to set it up first.
  await staffPage.goto(server.url + '/console/admin');
  await staffPage.waitForURL(server.url + '/console/settings');
  await setUpTwoFactor(staffPage, server.url);
  await staffPage.goto(server.url + '/console/admin');
  await staffPage.getByRole('heading', { name: 'Users' }).waitFor();
  assert.ok(await staffPage.getByRole('link', { name: staffEmail }).count() === 1);
  await staffContext.close();
});

test('the console works with JavaScript off', async () => {
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  const email = uniqueEmail('nojs');
  await signUp(page, server.url, email);
  assert.equal(await page.getByTestId('current-user').textContent(), email);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(server.url + '/login');
  await signIn(page, server.url, email, 'Wrong-password-99');
  await page.getByRole('alert').filter({ hasText: 'Wrong email or password.' }).waitFor();
  await context.close();
});

test('unknown pages get a 404 page', async () => {
  const page = await browser.newPage();
  const response = await page.goto(server.url + '/no/such/page');
  assert.equal(response.status(), 404);
  await page.getByRole('heading', { name: 'Page not found' }).waitFor();
  await page.close();
});

test('with two-factor sign-in on, the password alone does not sign in; the code does', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const email = uniqueEmail('twofa');
  await signUp(page, server.url, email);
  await setUpTwoFactor(page, server.url);
  assert.equal(server.sql(`SELECT totp_secret_enc IS NOT NULL FROM users WHERE email = '${email}'`), 't');
  const codes = await page.getByTestId('recovery-codes').locator('li').allTextContents();
  assert.equal(codes.length, 10);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(server.url + '/login');

  await signIn(page, server.url, email);
  await page.waitForURL(server.url + '/login/code');
  await page.goto(server.url + '/console');
  assert.match(page.url(), /\/login\?next=/, 'not signed in before the code');
  await page.goto(server.url + '/login/code');
  await page.getByLabel('Code').fill(codes[0]);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(server.url + '/console');
  assert.equal(await page.getByTestId('current-user').textContent(), email);
  await context.close();
});
