// Issue #18, the staff pages: users with their money, an audit log that reads as sentences,
// business per day on Operations, errors beside the row they concern, and no English left in
// the Chinese console.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { server, browser, useServer, uniqueEmail, signUp, signInStaff, open, PASSWORD } from './harness.mjs';
import { staffApi, customer, call, usageRecords, buyStarter, payInSandbox } from './helpers.mjs';

useServer();

/** A staff member signed in with two-factor in a fresh context: `{ context, page, email }`. */
async function staffPage(lang = 'en') {
  const email = uniqueEmail('staff');
  server.cli('admin', 'create', '--email', email, '--password', PASSWORD);
  const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
  const page = await context.newPage();
  await signInStaff(page, server.url, email);
  if (lang !== 'en') {
    const url = new URL(server.url);
    await context.addCookies([{ name: 'cloudrouter_lang', value: lang, domain: url.hostname, path: '/' }]);
  }
  return { context, page, email };
}

/** A customer who signed up and paid `amount` yuan into their balance in the sandbox. */
async function toppedUp(tag, amount) {
  const page = await browser.newPage();
  const email = uniqueEmail(tag);
  await signUp(page, server.url, email);
  await open(page, server.url + '/console/billing');
  await page.getByTestId('top-up-amount').fill(amount);
  await page.locator('select[name="method"]').selectOption('sandbox');
  await page.getByRole('button', { name: 'Continue to payment' }).click();
  await payInSandbox(page);
  return { page, email };
}

/** The emails of the users list, top to bottom. */
async function listed(page) {
  // the list loads after a sort link's navigation: read it once its rows are there
  await page.getByTestId('user-row').first().waitFor();
  return (await page.getByTestId('user-row').locator('td:first-child').allTextContents()).map((s) => s.trim());
}

test('the users list shows balance, plan and 30-day spend per user, sorted on the server by each and by sign-up', async () => {
  const api = await staffApi();
  const tag = `sortme${Date.now() % 100000}`;
  const rich = await customer(api, `${tag}-rich`, '500');
  const poor = await customer(api, `${tag}-poor`, '20');
  // a subscriber with no balance, on Starter
  const sub = await browser.newPage();
  const subEmail = uniqueEmail(`${tag}-sub`);
  await signUp(sub, server.url, subEmail);
  await buyStarter(sub);
  await sub.close();
  assert.equal((await call(rich.key)).status, 200);
  await usageRecords(rich.id, 1);
  const spent = Number(server.sql(`SELECT sum(charge_micros) FROM usage_records WHERE user_id = '${rich.id}'`));
  assert.ok(spent > 0);

  const { context, page } = await staffPage();
  await open(page, server.url + `/console/admin?q=${tag}`);
  assert.equal((await listed(page)).length, 3);
  const row = (email) => page.getByTestId('user-row').filter({ hasText: email });
  // money to two decimals, the exact amount on hover
  const balance = row(rich.email).getByTestId('user-balance');
  const exact = Number(server.sql(`SELECT balance_micros FROM balances WHERE user_id = '${rich.id}'`));
  assert.equal((await balance.textContent()).trim(), '¥' + (Math.round(exact / 1e4) / 100).toFixed(2));
  assert.equal(await balance.getAttribute('title'), '¥' + (exact / 1e6).toFixed(6));
  assert.equal((await row(rich.email).getByTestId('user-spend').textContent()).trim(), '¥' + (Math.round(spent / 1e4) / 100).toFixed(2));
  assert.equal((await row(poor.email).getByTestId('user-spend').textContent()).trim(), '¥0.00');
  assert.equal((await row(subEmail).getByTestId('user-plan').textContent()).trim(), 'Starter');
  assert.equal((await row(poor.email).getByTestId('user-plan').textContent()).trim(), 'Pay-as-you-go');

  // sorted by balance: largest first, then smallest first
  await page.getByTestId('sort-balance').click();
  await page.waitForURL(/sort=balance&dir=desc/);
  await page.locator('body[data-hydrated]').waitFor();
  assert.deepEqual(await listed(page), [rich.email, poor.email, subEmail]);
  await page.getByTestId('sort-balance').click();
  await page.waitForURL(/sort=balance&dir=asc/);
  assert.deepEqual(await listed(page), [subEmail, poor.email, rich.email]);
  // by 30-day spend, by plan (pay-as-you-go last), by sign-up (newest first); the search stays
  await open(page, server.url + `/console/admin?q=${tag}&sort=spend&dir=desc`);
  assert.equal((await listed(page))[0], rich.email);
  await page.getByTestId('sort-plan').click();
  await page.waitForURL(/sort=plan/);
  assert.ok(page.url().includes(`q=${tag}`), page.url());
  assert.equal((await listed(page))[0], subEmail);
  await open(page, server.url + `/console/admin?q=${tag}&sort=joined&dir=desc`);
  assert.deepEqual(await listed(page), [subEmail, poor.email, rich.email]);
  await context.close();
});

test('the audit log reads as sentences in the staff member’s language and filters by staff, action, customer and days', async () => {
  const api = await staffApi();
  const c = await customer(api, 'audited', '50');
  const other = await customer(api, 'bystander', '0');
  await api('POST', `/users/${c.id}/credit`, { amount: '-12.5', note: 'wrong top-up', idempotency_key: `e2e-debit-${c.id}` });

  const { context, page, email } = await staffPage();
  // this staff member suspends the bystander
  await open(page, server.url + `/console/admin/users/${other.id}`);
  await page.getByRole('button', { name: 'Suspend account' }).click();
  await page.getByTestId('user-status').filter({ hasText: 'Suspended' }).waitFor();

  await open(page, server.url + '/console/admin/audit');
  const sentences = async () => (await page.getByTestId('audit-sentence').allTextContents()).map((s) => s.trim());
  const all = await sentences();
  assert.ok(all.includes(`${api.email} credited ¥50.00 to ${c.email}: test credit`), all.join('\n'));
  assert.ok(all.includes(`${api.email} debited ¥12.50 from ${c.email}: wrong top-up`), all.join('\n'));
  assert.ok(all.includes(`${email} suspended ${other.email}`), all.join('\n'));

  // by staff member
  await page.getByLabel('Staff member').fill(email);
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.waitForURL(/staff=/);
  await page.locator('body[data-hydrated]').waitFor();
  assert.deepEqual(await sentences(), [`${email} suspended ${other.email}`]);
  // by action and customer
  await open(page, server.url + `/console/admin/audit?action=balance.adjust&customer=${encodeURIComponent(c.email)}`);
  assert.deepEqual(await sentences(), [`${api.email} debited ¥12.50 from ${c.email}: wrong top-up`, `${api.email} credited ¥50.00 to ${c.email}: test credit`]);
  assert.equal(await page.getByLabel('Action').inputValue(), 'balance.adjust');
  // by days: nothing from tomorrow on; everything from yesterday to tomorrow
  const day = (offset) => new Date(Date.now() + offset * 86400000).toISOString().slice(0, 10);
  await open(page, server.url + `/console/admin/audit?customer=${encodeURIComponent(c.email)}&from=${day(1)}`);
  assert.equal(await page.getByTestId('audit-row').count(), 0);
  await page.getByText('No staff actions match.').waitFor();
  await open(page, server.url + `/console/admin/audit?customer=${encodeURIComponent(c.email)}&from=${day(-1)}&to=${day(1)}`);
  assert.equal(await page.getByTestId('audit-row').count(), 4, 'the account, its key, its credit and its debit');

  // in Chinese
  const url = new URL(server.url);
  await context.addCookies([{ name: 'cloudrouter_lang', value: 'zh', domain: url.hostname, path: '/' }]);
  await open(page, server.url + `/console/admin/audit?action=balance.adjust&customer=${encodeURIComponent(c.email)}`);
  assert.deepEqual(await sentences(), [`${api.email} 扣款 ¥12.50（客户 ${c.email}）：wrong top-up`, `${api.email} 充值 ¥50.00 给 ${c.email}：test credit`]);
  await context.close();
});

test('Operations shows top-ups, revenue and sign-ups per day, and no upstream row for requests refused before any upstream', async () => {
  const api = await staffApi();
  const c = await customer(api, 'ops-ok', '50');
  const broke = await customer(api, 'ops-broke', '0');
  assert.equal((await call(c.key)).status, 200);
  assert.equal((await call(c.key, 'gpt-4o')).status, 404);
  assert.equal((await call(broke.key)).status, 402);
  await usageRecords(c.id, 2);
  await usageRecords(broke.id, 1);
  const { page: customerPage } = await toppedUp('ops-topup', '88.8');
  await customerPage.close();

  const { context, page } = await staffPage();
  await open(page, server.url + '/console/admin/operations');
  const names = (await page.getByTestId('ops-upstream').locator('td:first-child').allTextContents()).map((s) => s.trim());
  assert.deepEqual(names, ['Demo (simulated Claude)']);
  assert.match(await page.getByTestId('ops-unrouted').textContent(), /\b2 requests\b/);

  const today = page.getByTestId('ops-day').first();
  const cell = async (id) => (await today.getByTestId(id).textContent()).trim();
  const topups = server.sql(`SELECT count(*) FROM orders WHERE kind = 'topup' AND paid_at IS NOT NULL`);
  const revenue = Number(server.sql(`SELECT COALESCE(sum(amount_micros), 0) FROM orders WHERE paid_at IS NOT NULL AND method <> 'balance'`));
  assert.equal(topups, '1');
  assert.equal(await cell('ops-day-topups'), '1');
  assert.equal(await cell('ops-day-topped-up'), '¥88.80');
  assert.equal(await cell('ops-day-revenue'), '¥' + (revenue / 1e6).toFixed(2));
  assert.equal(await cell('ops-day-signups'), server.sql('SELECT count(*) FROM users'));
  // 24 hours span yesterday and today (only today in the day's last hour; the browser's zone is
  // UTC); 7 days, seven rows; a total under them
  assert.equal(await page.getByTestId('ops-day').count(), new Date().getUTCHours() === 23 ? 1 : 2);
  await open(page, server.url + '/console/admin/operations?range=7d');
  assert.equal(await page.getByTestId('ops-day').count(), 7);
  assert.equal((await page.getByTestId('ops-total').getByTestId('ops-day-topped-up').textContent()).trim(), '¥88.80');
  await context.close();
});

test('Models & channels and Plans & prices answer beside the row they concern, current first and the rest folded', async () => {
  const { context, page } = await staffPage();
  await open(page, server.url + '/console/admin/catalogue');
  const sonnet = page.locator('[data-testid="model-row"][data-model="claude-sonnet-4-6"]');
  await sonnet.locator('input[name="input"]').fill('three dollars');
  await sonnet.getByRole('button', { name: 'Save' }).click();
  await sonnet.getByRole('alert').filter({ hasText: 'Prices are dollar amounts per million tokens' }).waitFor();
  assert.equal(await page.getByRole('alert').count(), 1, 'the error shows once, beside its row');
  // a channel's error beside that channel
  const value = page.getByTestId('channel-row').filter({ has: page.locator('input[name="code"][value="value"]') });
  await value.locator('input[name="rate"]').fill('-1');
  await value.getByRole('button', { name: 'Save' }).click();
  await value.getByRole('alert').filter({ hasText: 'The rate must be a positive amount' }).waitFor();

  // a model no longer offered, and one past its retirement date, fold away below the current ones
  server.sql(`UPDATE models SET deprecated_at = now() - interval '1 day' WHERE id = 'claude-3-7-sonnet'`);
  await open(page, server.url + '/console/admin/catalogue');
  const haiku = page.locator('[data-testid="model-row"][data-model="claude-3-5-haiku"]');
  await haiku.getByLabel('Offered').uncheck();
  await haiku.getByRole('button', { name: 'Save' }).click();
  // saved, it moves to the folded group
  await page.getByTestId('retired-models').locator('[data-model="claude-3-5-haiku"]').waitFor({ state: 'attached' });
  const folded = page.getByTestId('retired-models');
  assert.equal(await folded.evaluate((d) => d.open), false);
  // both folded, with any the catalogue retires by date (Sonnet 4.5 retires 2026-11-30)
  for (const id of ['claude-3-5-haiku', 'claude-3-7-sonnet']) assert.equal(await folded.locator(`[data-model="${id}"]`).count(), 1, id);
  const foldedRows = await folded.locator('[data-testid="model-row"]').count();
  assert.match(await folded.locator('summary').textContent(), new RegExp(`Retired or not offered \\(${foldedRows}\\)`));
  const current = await page.getByTestId('current-models').locator('[data-testid="model-row"]').evaluateAll((rows) => rows.map((r) => r.dataset.model));
  assert.ok(current.includes('claude-sonnet-4-6') && !current.includes('claude-3-5-haiku') && !current.includes('claude-3-7-sonnet'), current.join(', '));

  await open(page, server.url + '/console/admin/plans');
  const pro = page.locator('[data-testid="plan-row"][data-plan="pro"]');
  await pro.locator('input[name="rpm_limit"]').fill('-3');
  await pro.getByRole('button', { name: 'Save' }).click();
  await pro.getByRole('alert').filter({ hasText: 'Limits must be positive whole numbers.' }).waitFor();
  assert.equal(await page.getByRole('alert').count(), 1);
  const onSale = await page.getByTestId('plans-on-sale').locator('[data-testid="plan-row"]').evaluateAll((rows) => rows.map((r) => r.dataset.plan));
  assert.deepEqual(onSale.sort(), ['pro', 'starter', 'ultra']);
  const notOnSale = await page.getByTestId('plans-not-on-sale').locator('[data-testid="plan-row"]').evaluateAll((rows) => rows.map((r) => r.dataset.plan));
  assert.deepEqual(notOnSale.sort(), ['enterprise', 'payg']);
  await context.close();
});

/** Words of Latin letters on the page's main part that are not names, codes or addresses. */
async function englishOn(page) {
  const text = await page.locator('main').last().innerText();
  const allowed = new Set(['Claude', 'CloudRouter', 'API', 'ID', 'URL', 'Base', 'MTok', 'PDF', 'ms', 'p50', 'p95', 'UTC', 'Opus', 'Sonnet', 'Haiku', 'Fable', 'Mythos', 'Asia', 'Shanghai', 'cr', 'sk', 'Starter', 'Pro', 'Ultra', 'Enterprise', 'SDK', 'CSV', 'YYYY', 'MM', 'DD', 'JSON', 'SLA', 'TOTP', 'main', 'value', 'smart', 'stable', 'token', 'tokens', 'Token', 'IP', 'CIDR', 'p', 'Webhook', 'webhook', 'SMTP', 'HMAC', 'SHA', 'HTTP', 'HTTPS', 'POST', 'credit', 'top-up']); // also: the test customers' key name and staff notes, channel codes staff type
  return text
    .replace(/\S+@\S+/g, ' ') // emails
    .replace(/https?:\/\/\S+/g, ' ') // addresses
    .replace(/\/[\w\-/.]+/g, ' ') // paths
    .replace(/\bclaude-[\w.-]+/g, ' ') // model ids
    .replace(/\bcra?-\S+/g, ' ') // key and staff-token prefixes (random letters)
    .replace(/…\S+/g, ' ') // the last characters of a masked credential
    .replace(/https?\(s\)/g, ' ') // the scheme, as the upstream form's rule names it
    .replace(/`[^`]*`/g, ' ') // commands
    .replace(/\b[0-9a-f]{8}-[0-9a-f-]{27}\b/g, ' ') // ids
    .match(/[A-Za-z][A-Za-z'-]*/g)
    ?.filter((w) => !allowed.has(w)) ?? [];
}

test('no English is left on the staff pages in the Chinese console, server messages included', async () => {
  const api = await staffApi();
  const c = await customer(api, 'zh-page', '30');
  assert.equal((await call(c.key)).status, 200);
  await usageRecords(c.id, 1);
  const { context, page } = await staffPage('zh');
  for (const path of ['/console/admin', `/console/admin/users/${c.id}`, '/console/admin/upstreams', '/console/admin/catalogue', '/console/admin/billing',
    '/console/admin/operations', '/console/admin/incidents', '/console/admin/plans', '/console/admin/audit']) {
    await open(page, server.url + path);
    assert.deepEqual(await englishOn(page), [], `${path} shows English`);
  }
  // the demo upstream's name, in Chinese
  await open(page, server.url + '/console/admin/upstreams');
  assert.match(await page.getByTestId('upstream-row').first().textContent(), /演示上游（模拟 Claude）/);
  // server messages of staff actions come back in Chinese
  await page.getByLabel('名称', { exact: true }).fill('real');
  await page.getByLabel('Base URL').fill('ftp://example.com');
  await page.getByLabel('API 密钥', { exact: true }).fill('sk-ant-test');
  await page.getByRole('button', { name: '添加上游' }).click();
  const refused = page.getByRole('alert').first();
  await refused.waitFor();
  assert.deepEqual(await englishOn(page), [], await refused.textContent());
  await open(page, server.url + '/console/admin/catalogue');
  const value = page.getByTestId('channel-row').first();
  await value.locator('input[name="capacity"]').fill('0');
  await value.getByRole('button', { name: '保存' }).click();
  await value.getByRole('alert').waitFor();
  assert.deepEqual(await englishOn(page), []);
  await context.close();
});
