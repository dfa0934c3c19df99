import { test } from 'node:test';
import assert from 'node:assert/strict';
import { server, browser, useServer, uniqueEmail, signIn, signInStaff, signUp, open, PASSWORD } from './harness.mjs';

useServer();

function callGateway(key, body = {}) {
  return fetch(server.url + '/v1/messages', {
    method: 'POST',
    headers: { 'x-api-key': key, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'claude-sonnet-4-6', max_tokens: 64, messages: [{ role: 'user', content: 'Hello' }], ...body }),
  });
}

test('credit a balance, create a key, call the demo upstream, see the charge, revoke the key', async () => {
  const email = uniqueEmail('keys');
  server.cli('admin', 'create', '--email', email, '--password', PASSWORD);
  const page = await browser.newPage();
  await signInStaff(page, server.url, email);
  await page.goto(server.url + '/console');
  await page.getByTestId('demo-notice').waitFor();

  // Staff credit their own balance with an internal note, through the admin page.
  await open(page, server.url + '/console/admin?q=' + encodeURIComponent(email));
  await page.getByRole('link', { name: email }).click();
  await page.getByTestId('user-status').waitFor();
  await page.getByLabel('Amount (¥, negative to debit)').fill('10');
  await page.getByLabel('Internal note (staff only, required)').fill('e2e credit');
  await page.getByRole('button', { name: 'Apply' }).click();
  await page.getByRole('status').filter({ hasText: 'Balance is now ¥10.00.' }).waitFor();

  await open(page, server.url + '/console/keys');
  await page.getByLabel('Name').fill('e2e');
  await page.getByLabel('Channel').selectOption('smart');
  await page.getByRole('button', { name: 'Create key' }).click();
  const secret = (await page.getByTestId('new-key-secret').textContent()).trim();
  assert.match(secret, /^cr-[A-Za-z0-9]{40}$/);
  // Shown once: a reload no longer has it, only the prefix.
  await page.reload();
  assert.equal(await page.getByTestId('new-key-secret').count(), 0);
  assert.ok((await page.getByTestId('key-row').first().textContent()).includes(secret.slice(0, 6)));

  const res = await callGateway(secret);
  assert.equal(res.status, 200);
  assert.ok(res.headers.get('request-id'));
  const msg = await res.json();
  assert.equal(msg.type, 'message');
  assert.ok(msg.usage.input_tokens > 0 && msg.usage.output_tokens > 0);

  // The usage record is written off the request path: wait for it to appear.
  let charge = '';
  for (let i = 0; i < 50 && !charge; i++) {
    await page.goto(server.url + '/console/usage');
    if (await page.getByTestId('usage-row').count()) charge = await page.getByTestId('usage-charge').first().textContent();
    else await new Promise((r) => setTimeout(r, 200));
  }
  assert.match(charge, /^¥0\.\d+$/);
  // Smart channel: ¥1 per $1 of list price, so the charge in yuan equals the list price in dollars.
  const row = page.getByTestId('usage-row').first();
  assert.ok((await row.textContent()).includes('$' + charge.slice(1)), await row.textContent());
  const cached = (msg.usage.cache_creation_input_tokens || 0) + (msg.usage.cache_read_input_tokens || 0);
  if (cached === 0) {
    // Sonnet 4.6 lists at $3 / $15 per million tokens: 3 and 15 micro-dollars per token.
    const micros = msg.usage.input_tokens * 3 + msg.usage.output_tokens * 15;
    assert.equal(charge, '¥' + (micros / 1e6).toFixed(6).replace(/0+$/, '').replace(/\.(\d)$/, '.$10'));
  }

  await open(page, server.url + '/console/keys');
  // Revoking asks first.
  await page.getByLabel('Revoke e2e').click();
  await page.getByRole('button', { name: 'Yes, revoke it' }).click();
  await page.getByRole('status').filter({ hasText: 'Key revoked.' }).waitFor();
  let status = 0;
  for (let i = 0; i < 50 && status !== 401; i++) {
    status = (await callGateway(secret)).status;
    if (status !== 401) await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(status, 401);
  const err = await (await callGateway(secret)).json();
  assert.equal(err.type, 'error');
  assert.equal(err.error.type, 'authentication_error');
  await page.close();
});

test('with JavaScript off, a new key secret is still shown once', async () => {
  const email = uniqueEmail('nojs-keys');
  server.cli('admin', 'create', '--email', email, '--password', PASSWORD);
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await signIn(page, server.url, email);
  await page.waitForURL(server.url + '/console');
  await page.goto(server.url + '/console/keys');
  await page.getByLabel('Name').fill('plain form');
  await page.getByRole('button', { name: 'Create key' }).click();
  // The answer to the plain form post itself shows the key (it is kept nowhere for later).
  await page.waitForURL(/\/api\/keys\/create$/);
  assert.match((await page.getByTestId('new-key-secret').textContent()).trim(), /^cr-[A-Za-z0-9]{40}$/);
  await page.goto(server.url + '/console/keys');
  assert.equal(await page.getByTestId('new-key-secret').count(), 0);
  await context.close();
});

test('staff see upstream health and edit an upstream', async () => {
  const email = uniqueEmail('ops');
  server.cli('admin', 'create', '--email', email, '--password', PASSWORD);
  const page = await browser.newPage();
  await signInStaff(page, server.url, email);
  await open(page, server.url + '/console/admin/upstreams');
  const row = page.getByTestId('upstream-row').filter({ hasText: 'Demo (simulated Claude)' });
  await row.waitFor();
  assert.match(await row.textContent(), /closed/i);
  await row.locator('summary', { hasText: 'Edit' }).click();
  await row.getByLabel('Weight').fill('3');
  await row.getByRole('button', { name: 'Save' }).click();
  await page.getByRole('status').filter({ hasText: 'saved' }).waitFor();
  assert.equal(server.sql("SELECT weight FROM upstreams WHERE is_demo"), '3');
  await page.close();
});

test('quick start creates a first key and fills it into copyable snippets', async () => {
  const page = await browser.newPage();
  await signUp(page, server.url, uniqueEmail('newbie'));
  await open(page, server.url + '/console/quickstart');
  const curl = page.getByTestId('snippet').filter({ hasText: 'curl' });
  assert.ok((await curl.textContent()).includes(server.url + '/v1/messages'));
  assert.ok((await curl.textContent()).includes('YOUR_CLOUDROUTER_KEY'));
  await page.getByRole('button', { name: 'Create key' }).click();
  const key = (await page.getByTestId('quickstart-key').textContent()).trim();
  assert.match(key, /^cr-[A-Za-z0-9]{40}$/);
  for (const name of ['curl', 'Python', 'TypeScript', 'Claude Code']) {
    const text = await page.getByTestId('snippet').filter({ hasText: name }).first().textContent();
    assert.ok(text.includes(key), `${name} snippet has the key`);
  }
  assert.ok((await page.getByTestId('snippet').filter({ hasText: 'Claude Code' }).textContent()).includes(`ANTHROPIC_BASE_URL=${server.url}`));
  await page.close();
});
