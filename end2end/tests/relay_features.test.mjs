// Issue #17 in the console: the per-key controls set on the key form take effect at the gateway,
// and a redeem code staff generate on their page credits a customer once on the Billing page.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { server, browser, useServer, signInStaff, open } from './harness.mjs';
import { staffApi, customer, call, signedInContext } from './helpers.mjs';

useServer();

function callAs(key, headers) {
  return fetch(server.url + '/v1/messages', {
    method: 'POST',
    headers: { 'x-api-key': key, 'anthropic-version': '2023-06-01', 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model: 'claude-sonnet-4-6', max_tokens: 64, messages: [{ role: 'user', content: 'Hello there' }] }),
  });
}

/** Creates a key on the open keys page with the given form fields; returns its one-time secret. */
async function createKey(page, name, fields) {
  await page.getByLabel('Name').fill(name);
  await page.getByLabel('Channel').selectOption('smart');
  for (const [label, value] of Object.entries(fields)) {
    const field = page.getByLabel(label);
    if ((await field.evaluate((e) => e.tagName)) === 'SELECT') await field.selectOption(value);
    else await field.fill(value);
  }
  await page.getByRole('button', { name: 'Create key' }).click();
  const secret = page.getByTestId('new-key-secret');
  await secret.waitFor();
  const text = (await secret.textContent()).trim();
  await open(page, server.url + '/console/keys');
  return text;
}

test('an IP allow-list, tokens per minute and a client restriction set on the key form hold at the gateway', async () => {
  const api = await staffApi();
  const c = await customer(api, 'controls', '20');
  const { context, page } = await signedInContext(browser, c.email);
  await open(page, server.url + '/console/keys');

  // an address that is not one is refused beside the form, and no key is made
  const rows = await page.getByTestId('key-row').count();
  await page.getByLabel('Name').fill('typo');
  await page.getByLabel('IP allow-list (optional)').fill('10.0.0.300');
  await page.getByRole('button', { name: 'Create key' }).click();
  await page.getByText(/The IP allow-list takes addresses and CIDR blocks, like 203\.0\.113\.7 or 10\.0\.0\.0\/8: "10\.0\.0\.300" is not an IP address/).waitFor();
  assert.equal(await page.getByTestId('key-row').count(), rows);
  await open(page, server.url + '/console/keys');

  const elsewhere = await createKey(page, 'office', { 'IP allow-list (optional)': '203.0.113.0/24, 2001:db8::/32', 'Tokens / minute': '50000' });
  const row = page.getByTestId('key-row').filter({ hasText: 'office' });
  assert.match(await row.textContent(), /50000 tokens\/min · only from 203\.0\.113\.0\/24, 2001:db8::\/32/);
  const refused = await call(elsewhere);
  assert.equal(refused.status, 403);
  const err = await refused.json();
  assert.equal(err.error.type, 'permission_error');
  assert.match(err.error.message, /may not be used from this IP address/);
  // a forged X-Forwarded-For from an untrusted peer changes nothing
  assert.equal((await callAs(elsewhere, { 'x-forwarded-for': '203.0.113.9' })).status, 403);

  const local = await createKey(page, 'agent', { 'IP allow-list (optional)': '127.0.0.1', 'Clients': 'claude_code' });
  assert.match(await page.getByTestId('key-row').filter({ hasText: 'agent' }).textContent(), /only from 127\.0\.0\.1 · Claude Code only/);
  assert.equal((await callAs(local, { 'user-agent': 'claude-cli/2.0.14 (external, cli)' })).status, 200);
  const other = await callAs(local, { 'user-agent': 'curl/8.5.0' });
  assert.equal(other.status, 403);
  assert.match((await other.json()).error.message, /only from Claude Code/);
  await context.close();
});

test('staff generate balance codes, a customer redeems one once on Billing, and the batch shows it used', async () => {
  const api = await staffApi();
  const c = await customer(api, 'redeemer', '0');
  const staff = await browser.newPage();
  await signInStaff(staff, server.url, api.email);
  await open(staff, server.url + '/console/admin/redeem');
  await staff.getByLabel('Each code gives').selectOption('balance');
  await staff.getByLabel('Number of codes').fill('3');
  await staff.getByLabel('Amount (¥)').fill('25');
  await staff.getByLabel('Internal note').fill('launch event');
  await staff.getByRole('button', { name: 'Generate' }).click();
  const codes = (await staff.getByTestId('new-codes').textContent()).trim().split('\n');
  assert.equal(codes.length, 3);
  assert.match(codes[0], /^[A-Z0-9]{4}(-[A-Z0-9]{4}){4}$/);
  const batch = staff.getByTestId('redeem-batch').filter({ hasText: 'launch event' });
  assert.equal((await batch.getByTestId('batch-used').textContent()).trim(), '0 / 3');

  const { context, page } = await signedInContext(browser, c.email);
  await open(page, server.url + '/console/billing');
  const form = page.locator('#redeem');
  // typed in lower case without dashes, as people do
  await form.getByLabel('Redeem code').fill(codes[0].replaceAll('-', '').toLowerCase());
  await form.getByRole('button', { name: 'Redeem' }).click();
  await form.getByText('Code redeemed: ¥25.00 added to your balance.').waitFor();
  await page.getByTestId('ledger-row').filter({ hasText: '¥25.00' }).first().waitFor();
  // the same code again: refused, and the balance stays
  await form.getByLabel('Redeem code').fill(codes[0]);
  await form.getByRole('button', { name: 'Redeem' }).click();
  await form.getByRole('alert').waitFor();
  assert.equal(Number(server.sql(`SELECT balance_micros FROM balances WHERE user_id = '${c.id}'`)), 25_000_000);

  await open(staff, server.url + '/console/admin/redeem');
  assert.equal((await staff.getByTestId('redeem-batch').filter({ hasText: 'launch event' }).getByTestId('batch-used').textContent()).trim(), '1 / 3');
  await context.close();
  await staff.close();
});
