// Issue #18: one time zone per person. The request log, its date filter, the charts, the CSV and
// the ledger all read the same zone: Asia/Shanghai in Chinese, the browser's in English, or the
// one chosen in Settings, labelled once on the page.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { server, browser, useServer, open } from './harness.mjs';
import { staffApi, customer, call, usageRecords, signedInContext } from './helpers.mjs';

useServer();

/** Moves the customer's one request to 00:30 Shanghai time (16:30 UTC the day before), today or
 *  yesterday, so its Shanghai date and its UTC date differ. */
function moveToShanghaiMidnight(userId) {
  server.sql(`UPDATE usage_records SET created_at = (date_trunc('day', now() AT TIME ZONE 'Asia/Shanghai') AT TIME ZONE 'Asia/Shanghai')
      + interval '30 minutes' - CASE WHEN now() < (date_trunc('day', now() AT TIME ZONE 'Asia/Shanghai') AT TIME ZONE 'Asia/Shanghai') + interval '30 minutes'
      THEN interval '1 day' ELSE interval '0' END WHERE user_id = '${userId}'`);
}

function local(userId, zone, table = 'usage_records', format = 'YYYY-MM-DD HH24:MI') {
  return server.sql(`SELECT to_char(created_at AT TIME ZONE '${zone}', '${format}') FROM ${table} WHERE user_id = '${userId}' ORDER BY created_at DESC LIMIT 1`);
}

test('Chinese: times, the date filter, charts and CSV are Shanghai days, labelled once', async () => {
  const api = await staffApi();
  const c = await customer(api, 'tz-zh');
  assert.equal((await call(c.key)).status, 200);
  await usageRecords(c.id, 1);
  moveToShanghaiMidnight(c.id);
  const [day, hm] = local(c.id, 'Asia/Shanghai').split(' ');
  const [y, m, d] = day.split('-').map(Number);

  // The browser sits in New York: a Chinese console still reads Beijing time.
  const { context, page } = await signedInContext(browser, c.email, { lang: 'zh', timezoneId: 'America/New_York' });
  await open(page, server.url + `/console/usage?range=7d&by=none&from=${day}&to=${day}`);
  assert.match(await page.getByTestId('time-zone').textContent(), /Asia\/Shanghai \(UTC\+08:00\)/);
  // Filtering by the Beijing date finds the request, shown at its Beijing time.
  const rows = page.getByTestId('usage-row');
  assert.equal(await rows.count(), 1);
  assert.equal((await rows.first().getByTestId('usage-time').textContent()).trim(), `${y}年${m}月${d}日 ${hm}`);
  // The daily chart counts it on that Beijing day.
  const bar = page.getByTestId('chart-requests').locator(`[data-label="${day.slice(5)}"]`);
  assert.match(await bar.getAttribute('data-total'), /^1\b/);

  // The CSV of the same filter has the row, at the same time with its offset.
  const csv = await page.request.get(server.url + `/console/usage.csv?from=${day}&to=${day}`);
  const lines = (await csv.text()).trim().split(/\r?\n/);
  assert.equal(lines.length, 2, lines.join('\n'));
  assert.ok(lines[1].includes(`${day}T${hm}:`) && lines[1].includes('+08:00'), lines[1]);

  // The ledger reads the same zone.
  await open(page, server.url + '/console/billing');
  const [lday, lhm] = local(c.id, 'Asia/Shanghai', 'ledger_entries').split(' ');
  const [ly, lm, ld] = lday.split('-').map(Number);
  assert.ok((await page.getByTestId('ledger-row').first().textContent()).includes(`${ly}年${lm}月${ld}日 ${lhm}`));
  await context.close();
});

test('English: the browser zone by default, then the one chosen in Settings', async () => {
  const api = await staffApi();
  const c = await customer(api, 'tz-en');
  assert.equal((await call(c.key)).status, 200);
  await usageRecords(c.id, 1);
  moveToShanghaiMidnight(c.id);

  const { context, page } = await signedInContext(browser, c.email, { timezoneId: 'America/New_York' });
  await open(page, server.url + '/console/usage');
  assert.match(await page.getByTestId('time-zone').textContent(), /America\/New_York/);
  assert.equal((await page.getByTestId('usage-time').first().textContent()).trim(), local(c.id, 'America/New_York'));
  const nyDay = local(c.id, 'America/New_York', 'usage_records', 'YYYY-MM-DD');
  await open(page, server.url + `/console/usage?from=${nyDay}&to=${nyDay}`);
  assert.equal(await page.getByTestId('usage-row').count(), 1);

  // Choose Berlin in Settings: the label and every time follow.
  await open(page, server.url + '/console/settings');
  await page.getByTestId('time-zone-select').selectOption('Europe/Berlin');
  await page.getByRole('button', { name: 'Save time zone' }).click();
  await page.getByText('Time zone saved.').waitFor();
  assert.match(await page.getByTestId('time-zone').textContent(), /Europe\/Berlin/);
  assert.equal(server.sql(`SELECT time_zone FROM users WHERE id = '${c.id}'`), 'Europe/Berlin');
  await open(page, server.url + '/console/usage');
  assert.equal((await page.getByTestId('usage-time').first().textContent()).trim(), local(c.id, 'Europe/Berlin'));
  const berlinDay = local(c.id, 'Europe/Berlin', 'usage_records', 'YYYY-MM-DD');
  await open(page, server.url + `/console/usage?from=${berlinDay}&to=${berlinDay}`);
  assert.equal(await page.getByTestId('usage-row').count(), 1);
  await context.close();
});
