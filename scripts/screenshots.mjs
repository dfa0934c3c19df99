// Screenshots of the console for the README (issue #18): Overview, Usage, API keys and Billing at
// 1,366 px and 390 px, in English and Chinese, of a demo customer with some usage.
// Usage: DATABASE_URL=postgres://… SERVER_BIN=/path/to/server node scripts/screenshots.mjs
// Chinese pages need a CJK font in the browser (Debian: apt-get install fonts-wqy-zenhei).
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TestServer, launchBrowser, uniqueEmail, PASSWORD } from '../end2end/tests/harness.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const OUT = path.join(ROOT, 'docs/screenshots');
mkdirSync(OUT, { recursive: true });

const server = await TestServer.start();
const browser = await launchBrowser();
try {
  const staff = uniqueEmail('ops');
  server.cli('admin', 'create', '--email', staff, '--password', PASSWORD);
  const token = server.cli('admin', 'token', '--email', staff).trim();
  const api = async (method, p, body) => {
    const res = await fetch(server.url + '/api/admin/v1' + p, {
      method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body && JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${await res.text()}`);
    return res.json();
  };
  const email = 'demo@example.com';
  const { id } = await api('POST', '/users', { email, password: PASSWORD });
  await api('POST', `/users/${id}/credit`, { amount: '200', note: 'welcome credit', idempotency_key: `shots-${id}` });
  const keys = [await api('POST', `/users/${id}/keys`, { name: 'laptop', channel: 'smart' }), await api('POST', `/users/${id}/keys`, { name: 'ci', channel: 'stable' })];
  const models = ['claude-sonnet-4-6', 'claude-haiku-4-5-20251001', 'claude-opus-4-5-20251101', 'claude-sonnet-4-6', 'gpt-4o'];
  for (let i = 0; i < 12; i++) {
    await fetch(server.url + '/v1/messages', {
      method: 'POST',
      headers: { 'x-api-key': keys[i % 2].key, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
      body: JSON.stringify({ model: models[i % models.length], max_tokens: 64, messages: [{ role: 'user', content: 'Hello there' }] }),
    });
  }
  await new Promise((r) => setTimeout(r, 1500));
  const pages = [['overview', '/console'], ['usage', '/console/usage?range=7d&by=model'], ['keys', '/console/keys'], ['billing', '/console/billing']];
  const host = new URL(server.url).hostname;
  for (const lang of ['en', 'zh']) {
    for (const width of [1366, 390]) {
      const context = await browser.newContext({ viewport: { width, height: width > 500 ? 900 : 844 }, deviceScaleFactor: 1, timezoneId: 'Asia/Shanghai' });
      await context.addCookies([{ name: 'cloudrouter_lang', value: 'en', domain: host, path: '/' }]);
      const page = await context.newPage();
      await page.goto(server.url + '/login');
      await page.getByLabel('Email').fill(email);
      await page.getByLabel('Password').fill(PASSWORD);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.waitForURL(server.url + '/console');
      await context.addCookies([{ name: 'cloudrouter_lang', value: lang, domain: host, path: '/' }]);
      for (const [name, url] of pages) {
        await page.goto(server.url + url);
        await page.locator('body[data-hydrated]').waitFor();
        const file = path.join(OUT, `${name}-${lang}-${width}.png`);
        await page.screenshot({ path: file, fullPage: true });
        console.log(file);
      }
      await context.close();
    }
  }
} finally {
  await browser.close();
  await server.stop();
}
