// Issue #18: the first call works. Quick start's first step says what a call needs before it can
// succeed (a new account has ¥0 and no plan: 402), offers trial credit and a top-up, and shows
// the trial application's state; no snippet is handed out without saying why it would fail.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { server, browser, useServer, uniqueEmail, signUp, signInStaff, open, PASSWORD } from './harness.mjs';

useServer();

test('a new account learns it needs funds, applies for trial credit, and its first call succeeds once approved', async () => {
  const page = await browser.newPage();
  const email = uniqueEmail('first');
  await signUp(page, server.url, email);
  await open(page, server.url + '/console/quickstart');
  const step = page.getByTestId('readiness-step');
  const readiness = step.getByTestId('readiness');
  assert.equal(await readiness.getAttribute('data-ready'), 'false');
  assert.match(await readiness.textContent(), /¥0\.00.*402/);
  assert.equal(await step.getByRole('link', { name: 'Top up your balance' }).getAttribute('href'), '/console/billing#top-up');
  assert.match(await page.getByTestId('snippet-warning').textContent(), /402/);

  await step.getByLabel('What will you use it for?').fill('Trying Claude for a support bot.');
  await step.getByRole('button', { name: 'Apply for trial credit' }).click();
  await step.getByTestId('trial-state').filter({ hasText: 'waiting for our staff' }).waitFor();

  const staffEmail = uniqueEmail('approver');
  server.cli('admin', 'create', '--email', staffEmail, '--password', PASSWORD);
  const staff = await browser.newPage();
  await signInStaff(staff, server.url, staffEmail);
  await open(staff, server.url + '/console/admin/billing');
  const application = staff.getByTestId('trial-application').filter({ hasText: email });
  await application.getByRole('button', { name: 'Approve' }).click();
  await application.waitFor({ state: 'detached' });

  await open(page, server.url + '/console/quickstart');
  assert.equal(await page.getByTestId('readiness').getAttribute('data-ready'), 'true');
  assert.match(await page.getByTestId('trial-state').textContent(), /approved: ¥20\.00 of ¥20\.00 left/);
  assert.equal(await page.getByTestId('snippet-warning').count(), 0);

  await page.getByRole('button', { name: 'Create key' }).click();
  const key = (await page.getByTestId('quickstart-key').textContent()).trim();
  const res = await fetch(server.url + '/v1/messages', {
    method: 'POST',
    headers: { 'x-api-key': key, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'claude-sonnet-4-6', max_tokens: 64, messages: [{ role: 'user', content: 'Hello, Claude' }] }),
  });
  assert.equal(res.status, 200, await res.text());
  await page.close();
  await staff.close();
});
