import { test } from 'node:test';
import assert from 'node:assert/strict';
import { server, browser, useServer, uniqueEmail, signIn, open, PASSWORD } from './harness.mjs';

useServer();

/** The console's yuan format: exact, at least two decimals. */
function yuan(micros) {
  let s = (Number(micros) / 1e6).toFixed(6);
  while (s.endsWith('0') && s.length - s.indexOf('.') > 3) s = s.slice(0, -1);
  return '¥' + s;
}

async function staffApi() {
  const email = uniqueEmail('ops');
  server.cli('admin', 'create', '--email', email, '--password', PASSWORD);
  const token = server.cli('admin', 'token', '--email', email).trim();
  return async (method, path, body) => {
    const res = await fetch(server.url + '/api/admin/v1' + path, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body && JSON.stringify(body),
    });
    assert.ok(res.ok, `${method} ${path}: ${res.status} ${await res.clone().text()}`);
    return res.json();
  };
}

function call(key, model) {
  return fetch(server.url + '/v1/messages', {
    method: 'POST',
    headers: { 'x-api-key': key, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
    body: JSON.stringify({ model, max_tokens: 64, messages: [{ role: 'user', content: 'Hello there' }] }),
  });
}

test('usage charts show the right totals; the log filters and exports to CSV', async () => {
  const api = await staffApi();
  const email = uniqueEmail('heavy');
  const { id } = await api('POST', '/users', { email, password: PASSWORD });
  await api('POST', `/users/${id}/credit`, { amount: '50', note: 'test credit', idempotency_key: `e2e-usage-${id}` });
  const alpha = await api('POST', `/users/${id}/keys`, { name: 'alpha', channel: 'smart' });
  const beta = await api('POST', `/users/${id}/keys`, { name: 'beta', channel: 'stable' });
  for (const [key, model] of [[alpha.key, 'claude-sonnet-4-6'], [alpha.key, 'claude-haiku-4-5-20251001'], [beta.key, 'claude-opus-4-5-20251101'], [beta.key, 'claude-sonnet-4-6']]) {
    assert.equal((await call(key, model)).status, 200);
  }
  assert.equal((await call(alpha.key, 'no-such-model')).status, 404);

  // Usage is written off the request path; wait until all five records are in.
  let n = 0;
  for (let i = 0; i < 100 && n < 5; i++) {
    n = Number(server.sql(`SELECT count(*) FROM usage_records WHERE user_id = '${id}'`));
    if (n < 5) await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(n, 5);
  const total = server.sql(`SELECT sum(charge_micros) FROM usage_records WHERE user_id = '${id}'`);
  const alphaTotal = server.sql(`SELECT sum(charge_micros) FROM usage_records WHERE key_id = '${alpha.id}'`);

  const page = await browser.newPage();
  await signIn(page, server.url, email);
  await page.waitForURL(server.url + '/console');
  assert.match(await page.getByTestId('overview-spend-summary').textContent(), new RegExp('^' + yuan(total).replace('.', '\\.')));

  await open(page, server.url + '/console/usage?range=24h&by=key');
  const spend = await page.getByTestId('chart-spend-summary').textContent();
  assert.ok(spend.startsWith(yuan(total)), `${spend} should start with ${yuan(total)}`);
  assert.match(await page.getByTestId('chart-requests-summary').textContent(), /^5 requests, 20\.0% errors/);
  // The legend names the keys.
  assert.ok((await page.getByTestId('chart-spend').textContent()).includes('alpha'));

  // Filter the log to key alpha's successful requests.
  await page.getByLabel('Key').selectOption({ label: 'alpha' });
  await page.getByLabel('Status').selectOption('ok');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.waitForURL(/status=ok/);
  await page.locator('body[data-hydrated]').waitFor();
  const rows = page.getByTestId('usage-row');
  assert.equal(await rows.count(), 2);
  const charges = await page.getByTestId('usage-charge').allTextContents();
  const sum = charges.reduce((s, c) => s + Math.round(Number(c.slice(1)) * 1e6), 0);
  assert.equal(String(sum), alphaTotal);

  // The CSV has the same rows.
  const href = await page.getByRole('link', { name: 'CSV' }).getAttribute('href');
  const csv = await page.request.get(server.url + href);
  assert.equal(csv.status(), 200);
  assert.match(csv.headers()['content-type'], /text\/csv/);
  const lines = (await csv.text()).trim().split(/\r?\n/);
  assert.equal(lines.length, 3, lines.join('\n'));
  assert.ok(lines.slice(1).every((l) => l.includes('alpha')));
  assert.ok(!(await csv.text()).includes('Hello there'), 'no prompt text in exports');
  await page.close();
});
