import { test } from 'node:test';
import assert from 'node:assert/strict';
import { server, browser, useServer, uniqueEmail, signInStaff, open, PASSWORD } from './harness.mjs';

useServer();

/** Whether the page is wider than its viewport (a phone would scroll sideways). */
async function overflows(page) {
  return page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
}

test('staff post an incident; the signed-out status page shows it in both languages, also on a phone', async () => {
  // two successes and one failure on the Value channel a moment ago
  server.sql(`INSERT INTO users (email, password_hash) VALUES ('traffic@example.com', 'x')`);
  server.sql(`INSERT INTO usage_records (id, created_at, user_id, channel, endpoint, requested_model, stream, status, outcome, latency_ms)
    SELECT 'req_e2e_' || g, now() - interval '2 minutes', id, 'value', 'messages', 'claude-sonnet-4-6', false,
           CASE WHEN g = 3 THEN 529 ELSE 200 END, CASE WHEN g = 3 THEN 'upstream_error' ELSE 'ok' END, 700
    FROM users, generate_series(1, 3) g WHERE email = 'traffic@example.com'`);

  const staffEmail = uniqueEmail('ops');
  server.cli('admin', 'create', '--email', staffEmail, '--password', PASSWORD);
  const staff = await browser.newPage();
  await signInStaff(staff, server.url, staffEmail);
  await open(staff, server.url + '/console/admin/incidents');
  const form = staff.locator('section', { has: staff.getByRole('heading', { name: 'Post an incident' }) });
  await form.getByLabel('Title (English)').fill('Slow answers on Value');
  await form.getByLabel('Title (Chinese)').fill('经济渠道响应变慢');
  await form.getByLabel('Impact').selectOption('minor');
  await form.getByLabel('Affected channels').fill('value');
  await form.getByLabel('Message (English)').fill('We are looking into slow answers.');
  await form.getByLabel('Message (Chinese)').fill('我们正在调查响应变慢的问题。');
  await form.getByRole('button', { name: 'Post incident' }).click();
  await staff.getByRole('status').filter({ hasText: 'Incident posted.' }).waitFor();
  await staff.getByTestId('admin-incident').filter({ hasText: 'Slow answers on Value' }).waitFor();
  await staff.close();

  // signed out, in English, from the landing page's footer
  const en = await browser.newContext({ locale: 'en-US' });
  const page = await en.newPage();
  await page.goto(server.url + '/');
  await page.getByTestId('footer-status').click();
  await page.waitForURL(server.url + '/status');
  await page.getByTestId('status-headline').filter({ hasText: 'Some systems are degraded' }).waitFor();
  const incident = page.getByTestId('incident').filter({ hasText: 'Slow answers on Value' });
  await incident.getByText('We are looking into slow answers.').waitFor();
  await incident.getByText('Investigating').first().waitFor();
  const value = page.locator('[data-channel="value"]');
  assert.equal((await value.getByTestId('channel-condition').textContent()).trim(), 'Degraded performance');
  assert.equal(await value.getByTestId('availability-24h').textContent(), '66.66%');
  assert.equal(await value.getByTestId('latency-24h').textContent(), '761 ms');
  const days = value.getByRole('listitem');
  assert.equal(await days.count(), 90);
  assert.equal(await value.locator('[data-level="none"]').count(), 89, 'days without traffic are no data, not 100%');
  assert.match(await days.last().getAttribute('title'), /: 66\.66% available · 3 requests · 1 failed · median 761 ms$/);
  assert.equal(await days.last().getAttribute('data-level'), 'bad');
  assert.equal((await page.locator('[data-channel="stable"]').getByTestId('availability-24h').textContent()), 'No data');
  await en.close();

  // in Chinese
  const zh = await browser.newContext({ locale: 'zh-CN' });
  const zhPage = await zh.newPage();
  await zhPage.goto(server.url + '/status');
  await zhPage.getByTestId('status-headline').filter({ hasText: '部分系统性能下降' }).waitFor();
  const zhIncident = zhPage.getByTestId('incident').filter({ hasText: '经济渠道响应变慢' });
  await zhIncident.getByText('我们正在调查响应变慢的问题。').waitFor();
  await zhIncident.getByText('调查中').first().waitFor();
  assert.equal((await zhPage.locator('[data-channel="value"]').getByTestId('channel-condition').textContent()).trim(), '性能下降');
  assert.equal(await zhPage.getByText('Slow answers on Value').count(), 0);
  await zh.close();

  // a phone 390 px wide scrolls only down, in both languages
  for (const locale of ['en-US', 'zh-CN']) {
    const phone = await browser.newContext({ locale, viewport: { width: 390, height: 844 } });
    const p = await phone.newPage();
    await open(p, server.url + '/status');
    await p.getByTestId('incident').first().waitFor();
    assert.equal(await overflows(p), false, `no horizontal overflow at 390 px (${locale})`);
    // the phone shows the last 30 days
    assert.equal(await p.locator('[data-channel="value"] [role="listitem"]:visible').count(), 30);
    await phone.close();
  }
});
