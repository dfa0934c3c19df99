// Issue #18: logs people can debug with, and money read at a glance.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { server, browser, useServer, uniqueEmail, signInStaff, open, PASSWORD } from './harness.mjs';
import { staffApi, customer, call, usageRecords, signedInContext } from './helpers.mjs';

useServer();

test('the request log names each error, shows the model asked for, fits at 1,366 px and finds a request by its id', async () => {
  const api = await staffApi();
  const c = await customer(api, 'logs');
  const broke = await customer(api, 'broke', '0');
  assert.equal((await call(c.key)).status, 200);
  const unknown = await call(c.key, 'gpt-4o');
  assert.equal(unknown.status, 404);
  const unknownId = unknown.headers.get('request-id');
  assert.ok(unknownId, 'the error carries its request-id');
  const refused = await call(broke.key);
  assert.equal(refused.status, 402);
  const refusedId = refused.headers.get('request-id');
  await usageRecords(c.id, 2);
  await usageRecords(broke.id, 1);

  const { context, page } = await signedInContext(browser, c.email, { viewport: { width: 1366, height: 900 } });
  await open(page, server.url + '/console/usage');
  const statuses = await page.getByTestId('usage-status').allTextContents();
  assert.deepEqual(statuses.map((s) => s.trim()).sort(), ['200 OK', '404 unknown model gpt-4o']);
  assert.ok((await page.getByTestId('usage-model').allTextContents()).includes('gpt-4o'));
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px`);
  // Secondary columns fold out under the row.
  const row = page.getByTestId('usage-row').filter({ hasText: 'gpt-4o' });
  await row.locator('summary').click();
  assert.equal((await row.getByTestId('usage-request-id').textContent()).trim(), unknownId);

  // Search by request id: one's own finds it; another customer's finds nothing.
  await page.getByLabel('Request ID').fill(unknownId);
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.waitForURL(/request_id=/);
  await page.locator('body[data-hydrated]').waitFor();
  assert.equal(await page.getByTestId('usage-row').count(), 1);
  await open(page, server.url + `/console/usage?request_id=${refusedId}`);
  assert.equal(await page.getByTestId('usage-row').count(), 0);

  // Charts: a model that only failed spent nothing and is not in the spend legend; failures are red.
  await open(page, server.url + '/console/usage?range=24h&by=model');
  const spendLegend = await page.getByTestId('chart-spend').locator('li').allTextContents();
  assert.ok(!spendLegend.includes('gpt-4o'), spendLegend.join(', '));
  const failed = page.getByTestId('chart-requests').locator('li', { hasText: 'Failed' }).locator('span');
  assert.match(await failed.getAttribute('style'), /#ef4444/);
  await context.close();

  // The broke customer reads why: 402 insufficient balance (in Chinese too).
  const b = await signedInContext(browser, broke.email, { lang: 'zh' });
  await open(b.page, server.url + '/console/usage');
  assert.equal((await b.page.getByTestId('usage-status').first().textContent()).trim(), '402 余额不足');
  await b.context.close();

  // Staff find anyone's request by its id.
  const staffEmail = uniqueEmail('support');
  server.cli('admin', 'create', '--email', staffEmail, '--password', PASSWORD);
  const staff = await browser.newPage();
  await signInStaff(staff, server.url, staffEmail);
  await open(staff, server.url + `/console/usage?request_id=${refusedId}`);
  assert.equal(await staff.getByTestId('usage-row').count(), 1);
  assert.match(await staff.getByTestId('usage-status').textContent(), /402 insufficient balance/);
  await staff.close();
});

test('balances read to two decimals with the exact amount on hover; rates per dollar; preset top-ups', async () => {
  const api = await staffApi();
  const c = await customer(api, 'money');
  assert.equal((await call(c.key)).status, 200);
  await usageRecords(c.id, 1);
  const exact = server.sql(`SELECT balance_micros FROM balances WHERE user_id = '${c.id}'`);
  const { context, page } = await signedInContext(browser, c.email);
  const balance = page.getByTestId('balance');
  assert.match(await balance.textContent(), /^¥\d+\.\d\d$/);
  assert.equal(await balance.getAttribute('title'), '¥' + (Number(exact) / 1e6).toFixed(6));

  await open(page, server.url + '/console/billing');
  assert.match(await page.getByTestId('billing-balance').textContent(), /^¥\d+\.\d\d$/);
  for (const b of await page.getByTestId('ledger-balance').allTextContents()) assert.match(b, /^-?¥\d+\.\d\d$/);
  // Preset amounts beside the free amount.
  const presets = await page.getByTestId('top-up-presets').getByRole('link').allTextContents();
  assert.deepEqual(presets, ['¥50', '¥100', '¥200', '¥500', '¥1,000']);
  await page.getByTestId('top-up-presets').getByRole('link', { name: '¥200' }).click();
  assert.equal(await page.getByTestId('top-up-amount').inputValue(), '200');

  await open(page, server.url + '/console/keys');
  const options = await page.locator('select[name="channel"] option').allTextContents();
  assert.ok(options.every((o) => /¥\d+\.\d\d \/ \$1$/.test(o)), options.join(' | '));
  // what requests draw on, to two decimals too
  const funds = await page.getByTestId('funds').textContent();
  assert.match(funds, /¥\d+\.\d\d\b/);
  assert.doesNotMatch(funds, /¥\d+\.\d{3}/, funds);
  await context.close();
});

test('plan cards say what the price buys and what the same costs pay-as-you-go, on the front page and Plans', async () => {
  const starter = [
    '¥99.00 a month buys $30.00 of list-price usage.',
    'On Value (¥0.60 / $1) pay-as-you-go, the same costs ¥18.00.',
    'On Smart (¥1.00 / $1) pay-as-you-go, the same costs ¥30.00.',
  ];
  const context = await browser.newContext({ locale: 'en-US' });
  const page = await context.newPage();
  await open(page, server.url + '/');
  const rates = (await page.getByTestId('channel-rate').allTextContents()).map((r) => r.trim());
  assert.deepEqual(rates, ['¥0.60 / $1', '¥1.00 / $1', '¥5.00 / $1']);
  assert.ok(!(await page.locator('body').textContent()).includes('per $1'));
  const card = page.getByTestId('plan-card').filter({ hasText: 'Starter' });
  assert.equal((await card.getByTestId('plan-price').textContent()).trim(), '¥99.00 / month');
  assert.deepEqual([await card.getByTestId('plan-buys').textContent(), ...(await card.getByTestId('plan-payg').locator('li').allTextContents())], starter);
  const pro = await page.getByTestId('plan-card').filter({ hasText: 'Pro' }).getByTestId('plan-payg').locator('li').allTextContents();
  assert.equal(pro.length, 3, pro.join(' | '));

  const api = await staffApi();
  const c = await customer(api, 'plans');
  const signed = await signedInContext(browser, c.email);
  await open(signed.page, server.url + '/console/plans');
  const inConsole = signed.page.getByTestId('plan-card').filter({ hasText: 'Starter' });
  assert.deepEqual([await inConsole.getByTestId('plan-buys').textContent(), ...(await inConsole.getByTestId('plan-payg').locator('li').allTextContents())], starter);
  await signed.context.close();
  await context.close();
});

// Last in this file: a real upstream switches the demo off for the whole server.
test('a request no upstream could take reads "529 no upstream available" in the log, in both languages', async () => {
  const api = await staffApi();
  const c = await customer(api, 'noupstream');
  // the only real upstream listens nowhere: every attempt fails to connect
  await api('POST', '/upstreams', { name: 'unreachable', base_url: 'http://127.0.0.1:9', api_key: 'sk-ant-none', channels: ['value', 'smart', 'stable'] });
  const res = await call(c.key);
  assert.equal(res.status, 529);
  await usageRecords(c.id, 1);
  const { context, page } = await signedInContext(browser, c.email);
  await open(page, server.url + '/console/usage');
  assert.equal((await page.getByTestId('usage-status').first().textContent()).trim(), '529 no upstream available');
  await context.close();
  const zh = await signedInContext(browser, c.email, { lang: 'zh' });
  await open(zh.page, server.url + '/console/usage');
  assert.equal((await zh.page.getByTestId('usage-status').first().textContent()).trim(), '529 没有可用的上游');
  await zh.context.close();
});
