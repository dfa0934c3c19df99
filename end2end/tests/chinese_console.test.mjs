// Issue #18: no English left in the Chinese customer console (status words, "(unknown)", order
// and refund states, server messages), and the English console says what went wrong in sentences.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { server, browser, useServer, open, PASSWORD } from './harness.mjs';
import { staffApi, customer, call, usageRecords, signedInContext } from './helpers.mjs';

useServer();

/** Words a Chinese page may keep in Latin letters: names, standards and what people type. */
const KEPT = new Set([
  'CloudRouter', 'Claude', 'Anthropic', 'English', 'TypeScript', 'JavaScript', 'API', 'SDK', 'SDKs', 'Opus', 'Sonnet', 'Haiku', 'Code', 'Python', 'Node', 'curl',
  'CSV', 'PDF', 'UTC', 'Asia', 'Shanghai', 'TTFT', 'MTok', 'Bearer', 'Authorization', 'key', 'api', 'base', 'url', 'ANTHROPIC', 'BASE', 'URL', 'KEY',
  'SLA', 'req', 'ms', 'QR', 'Alipay', 'WeChat', 'Webhook', 'webhook', 'JSON', 'HTTP', 'HTTPS', 'http', 'https', 'POST', 'HMAC', 'SHA',
  'claude', 'sonnet', 'opus', 'haiku', 'gpt', 'main', 'Starter', 'Pro', 'Ultra', 'Enterprise', 'Li', 'Lei', 'example', 'com', 'YYYY', 'MM', 'DD',
  // terms Chinese developers use as they are, model names, and the test's own key name
  'Base', 'token', 'tokens', 'Token', 'ID', 'IP', 'IPv', 'CIDR', 'Fable', 'Mythos', 'old',
]);

/** Latin words on the page outside code, inputs, emails and ids, minus the kept ones. */
async function english(page) {
  const text = await page.evaluate(() => {
    const skip = 'code, pre, kbd, samp, input, textarea, select, script, style, [data-testid="new-key-secret"], [data-testid="usage-request-id"]';
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const out = [];
    while (walker.nextNode()) {
      const node = walker.currentNode;
      if (node.parentElement.closest(skip)) continue;
      if (node.parentElement.closest('[hidden], [aria-hidden="true"]')) continue;
      out.push(node.textContent);
    }
    return out.join(' ');
  });
  const cleaned = text
    .replace(/\S+@\S+/g, ' ') // addresses
    .replace(/https?:\/\/\S+/g, ' ')
    .replace(/\bCR-[A-Z0-9]+\b/g, ' ') // order references
    .replace(/\bcr-[A-Za-z0-9]+/g, ' ') // key prefixes
    .replace(/\b(claude|gpt)-[a-z0-9.-]+/g, ' ') // model ids
    .replace(/\breq_[A-Za-z0-9]+/g, ' ');
  return [...new Set(cleaned.match(/[A-Za-z][A-Za-z'’-]*[A-Za-z]/g) || [])].filter((w) => !KEPT.has(w));
}

test('the Chinese customer console has no English in any state a customer meets', async () => {
  const api = await staffApi();
  const c = await customer(api, 'zhall');
  // usage: a success, an unknown model, a revoked key
  assert.equal((await call(c.key)).status, 200);
  assert.equal((await call(c.key, 'gpt-4o')).status, 404);
  await usageRecords(c.id, 2);
  const revoked = await api('POST', `/users/${c.id}/keys`, { name: 'old', channel: 'value' });

  const { context, page } = await signedInContext(browser, c.email, { lang: 'zh' });
  // a key revoked through the page, a top-up left unpaid and one cancelled, a plan paid, a refund
  // asked for, a trial applied for, an invoice requested
  await open(page, server.url + '/console/keys');
  const row = page.getByTestId('key-row').filter({ hasText: 'old' });
  await row.getByTestId('revoke').locator('summary').click();
  await row.getByRole('button', { name: '确定吊销' }).click();
  await page.getByTestId('key-row').filter({ hasText: 'old' }).filter({ hasText: '已吊销' }).waitFor();
  assert.ok(revoked.id);
  for (const amount of ['60', '70']) {
    await open(page, server.url + '/console/billing');
    await page.getByTestId('top-up-amount').fill(amount);
    await page.locator('select[name="method"]').selectOption('sandbox');
    await page.getByRole('button', { name: '继续支付' }).click();
    await page.waitForURL(/\/console\/pay\//);
  }
  await open(page, server.url + '/console/billing');
  await page.getByTestId('order-row').first().getByRole('button', { name: '取消' }).click();
  await page.getByRole('status').filter({ hasText: '订单已取消' }).waitFor();
  await open(page, server.url + '/console/plans');
  const pro = page.getByTestId('plan-card').nth(1);
  await pro.locator('select[name="method"]').selectOption('sandbox');
  await pro.locator('button[type="submit"]').click();
  await page.waitForURL(/\/console\/pay\//);
  await page.locator('body[data-hydrated]').waitFor();
  await page.getByRole('button', { name: /在沙盒中支付/ }).click();
  await page.waitForURL(/\/console\/billing\?paid=/);
  await page.getByTestId('payment-received').waitFor();
  await page.locator('body[data-hydrated]').waitFor();
  await page.getByTestId('trial-status').or(page.locator('textarea[name="reason"]')).first().waitFor();
  await page.locator('textarea[name="reason"]').fill('我想试试用 Claude 写代码和文档');
  await page.getByRole('button', { name: '申请试用额度' }).click();
  await page.getByTestId('trial-status').waitFor();
  await page.getByTestId('refund').getByRole('button', { name: /申请退款/ }).click();
  await page.getByRole('status').filter({ hasText: '退款' }).waitFor();

  const pages = ['', '/quickstart', '/keys', '/usage', '/plans', '/billing', '/invoices', '/settings'];
  const found = {};
  for (const p of pages) {
    await open(page, server.url + '/console' + p);
    const words = await english(page);
    if (words.length) found[p || '/'] = words;
  }
  assert.deepEqual(found, {}, 'English words on Chinese pages');
  await context.close();
});
