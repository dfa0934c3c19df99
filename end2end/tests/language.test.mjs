import { test } from 'node:test';
import assert from 'node:assert/strict';
import { server, browser, useServer, uniqueEmail, open, signUp, PASSWORD } from './harness.mjs';

useServer();

async function htmlLang(page) {
  return page.locator('html').getAttribute('lang');
}

test('a Chinese browser gets Chinese; switching to English is remembered for the account', async () => {
  const context = await browser.newContext({ locale: 'zh-CN' });
  const page = await context.newPage();

  await page.goto(server.url + '/');
  assert.equal(await htmlLang(page), 'zh-CN');
  await page.getByRole('link', { name: '创建账号' }).first().waitFor();
  await page.getByRole('heading', { name: '渠道', exact: true }).waitFor();
  await page.getByRole('heading', { name: '智能优选渠道' }).waitFor();

  await page.goto(server.url + '/login');
  assert.equal(await htmlLang(page), 'zh-CN');
  await page.getByRole('heading', { name: '登录' }).waitFor();
  await page.getByLabel('邮箱').waitFor();

  const email = uniqueEmail('zh');
  await signUp(page, server.url, email);
  await page.locator('body[data-hydrated]').waitFor();
  assert.equal(await htmlLang(page), 'zh-CN');
  await page.getByRole('heading', { name: '概览' }).waitFor();
  await page.getByRole('link', { name: 'API 密钥' }).waitFor();

  // Switch to English in the console header.
  await page.getByTestId('language-switch').getByRole('button', { name: 'English' }).click();
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  assert.equal(await htmlLang(page), 'en');
  assert.equal(page.url(), server.url + '/console');
  await page.getByRole('link', { name: 'API keys' }).waitFor();
  assert.equal(server.sql(`SELECT locale FROM users WHERE email = '${email}'`), 'en');

  // Sign out, forget the cookie (a fresh Chinese browser), sign in: still English.
  await page.locator('body[data-hydrated]').waitFor();
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(server.url + '/login');
  await context.close();

  const fresh = await browser.newContext({ locale: 'zh-CN' });
  const again = await fresh.newPage();
  await again.goto(server.url + '/login');
  assert.equal(await htmlLang(again), 'zh-CN');
  await again.locator('input[name="email"]').fill(email);
  await again.locator('input[name="password"]').fill(PASSWORD);
  await again.locator('form button[type="submit"]').last().click();
  await again.waitForURL(server.url + '/console');
  await again.goto(server.url + '/console/keys');
  assert.equal(await htmlLang(again), 'en');
  await again.getByRole('heading', { name: 'API keys' }).waitFor();
  await fresh.close();
});

test('the language can be switched with JavaScript off', async () => {
  const context = await browser.newContext({ javaScriptEnabled: false, locale: 'en-US' });
  const page = await context.newPage();
  await page.goto(server.url + '/login');
  assert.equal(await htmlLang(page), 'en');
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();

  await page.getByRole('button', { name: '中文' }).click();
  await page.waitForURL(server.url + '/login');
  assert.equal(await htmlLang(page), 'zh-CN');
  await page.getByRole('heading', { name: '登录' }).waitFor();

  await page.getByRole('button', { name: 'English' }).click();
  await page.waitForURL(server.url + '/login');
  assert.equal(await htmlLang(page), 'en');
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await context.close();
});

test('messages with values are translated', async () => {
  const context = await browser.newContext({ locale: 'zh-CN' });
  const page = await context.newPage();
  await signUp(page, server.url, uniqueEmail('zhdate'));
  await page.goto(server.url + '/console/keys');
  await page.locator('input[name="name"]').fill('笔记本');
  await page.locator('body[data-hydrated]').waitFor();
  await page.getByRole('button', { name: '创建密钥' }).click();
  await page.getByTestId('new-key').filter({ hasText: '密钥“笔记本”已创建' }).waitFor();
  await context.close();
});

test('order states, payment methods and ledger notes from the database show in Chinese', async () => {
  const context = await browser.newContext({ locale: 'zh-CN' });
  const page = await context.newPage();
  await signUp(page, server.url, uniqueEmail('zhpay'));
  await open(page, server.url + '/console/billing');
  await page.locator('input[name="amount"]').fill('50');
  await page.locator('select[name="method"]').selectOption('sandbox');
  await page.getByRole('button', { name: '继续支付' }).click();
  await page.waitForURL(/\/console\/pay\//);
  await page.getByRole('heading', { name: '余额充值' }).waitFor();

  await open(page, server.url + '/console/billing');
  const order = page.getByTestId('order-row').first();
  for (const word of ['充值', '沙盒支付', '待支付']) assert.ok((await order.textContent()).includes(word), word);
  await order.getByRole('link', { name: '支付' }).click();
  await page.waitForURL(/\/console\/pay\//);
  await page.locator('body[data-hydrated]').waitFor();
  await page.getByRole('button', { name: /在沙盒中支付 ¥50\.00/ }).click();
  await page.waitForURL(/\/console\/billing\?paid=/);
  assert.match(await page.getByTestId('payment-received').textContent(), /已收到付款/);
  await page.getByTestId('order-row').filter({ hasText: '已支付' }).waitFor();
  await page.getByTestId('ledger-row').filter({ hasText: '入账' }).filter({ hasText: '（沙盒支付）' }).waitFor();
  await context.close();
});
