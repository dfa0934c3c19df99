// Shared steps of the console tests (issue #18): a staff API client, a funded customer, calls.
import assert from 'node:assert/strict';
import { server, uniqueEmail, open, PASSWORD } from './harness.mjs';

/** A staff API client (a staff account made by the CLI, with a token). */
export async function staffApi() {
  const email = uniqueEmail('ops');
  server.cli('admin', 'create', '--email', email, '--password', PASSWORD);
  const token = server.cli('admin', 'token', '--email', email).trim();
  const api = async (method, path, body) => {
    const res = await fetch(server.url + '/api/admin/v1' + path, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body && JSON.stringify(body),
    });
    assert.ok(res.ok, `${method} ${path}: ${res.status} ${await res.clone().text()}`);
    return res.json();
  };
  api.email = email;
  return api;
}

/** A customer with `credit` yuan (none when 0) and one key: `{ id, email, key }`. */
export async function customer(api, tag, credit = '50') {
  const email = uniqueEmail(tag);
  const { id } = await api('POST', '/users', { email, password: PASSWORD });
  if (credit !== '0') await api('POST', `/users/${id}/credit`, { amount: credit, note: 'test credit', idempotency_key: `e2e-${tag}-${id}` });
  const key = await api('POST', `/users/${id}/keys`, { name: 'main', channel: 'smart' });
  return { id, email, key: key.key, keyId: key.id };
}

export function call(key, model = 'claude-sonnet-4-6') {
  return fetch(server.url + '/v1/messages', {
    method: 'POST',
    headers: { 'x-api-key': key, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
    body: JSON.stringify({ model, max_tokens: 64, messages: [{ role: 'user', content: 'Hello there' }] }),
  });
}

/** Waits until `n` usage records of `userId` are written (off the request path). */
export async function usageRecords(userId, n) {
  let got = 0;
  for (let i = 0; i < 150 && got < n; i++) {
    got = Number(server.sql(`SELECT count(*) FROM usage_records WHERE user_id = '${userId}'`));
    if (got < n) await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(got, n);
}

/** Signs in through the English form in a fresh context with `options` (locale, timezoneId,
 *  viewport); `lang` then sets the console language by its cookie. */
export async function signedInContext(browser, email, { lang = 'en', ...options } = {}) {
  const context = await browser.newContext(options);
  const url = new URL(server.url);
  await context.addCookies([{ name: 'cloudrouter_lang', value: 'en', domain: url.hostname, path: '/' }]);
  const page = await context.newPage();
  await page.goto(server.url + '/login');
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(server.url + '/console');
  if (lang !== 'en') await context.addCookies([{ name: 'cloudrouter_lang', value: lang, domain: url.hostname, path: '/' }]);
  return { context, page };
}

/** Buys the Starter plan on the Plans page, paid in the sandbox; returns the amount paid. */
export async function buyStarter(page) {
  await open(page, server.url + '/console/plans');
  const starter = page.getByTestId('plan-card').filter({ hasText: 'Starter' });
  await starter.getByLabel('Payment method for Starter').selectOption('sandbox');
  await starter.getByRole('button', { name: 'Subscribe to Starter' }).click();
  const amount = await payInSandbox(page);
  await page.getByTestId('payment-received').filter({ hasText: `Payment received: ${amount}` }).waitFor();
  await page.getByTestId('subscription').filter({ hasText: 'Starter plan' }).waitFor();
  return amount;
}

/** On the way to the pay page of an order just placed: pays it in the sandbox and waits for
 *  Billing; returns the amount shown. */
export async function payInSandbox(page) {
  await page.waitForURL(/\/console\/pay\//);
  await page.locator('body[data-hydrated]').waitFor();
  const amount = (await page.getByTestId('pay-amount').textContent()).trim();
  await page.getByRole('button', { name: `Pay ${amount} in the sandbox` }).click();
  await page.waitForURL(/\/console\/billing\?paid=/);
  return amount;
}
