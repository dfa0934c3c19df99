// Issue #18: at phone width (390 px) the console navigation is a menu that reaches every section,
// and the request log, the API keys and the ledger stack instead of scrolling sideways.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { server, browser, useServer, open } from './harness.mjs';
import { staffApi, customer, call, usageRecords, signedInContext } from './helpers.mjs';

useServer();

test('at 390 px the menu reaches every section and the request log fits', async () => {
  const api = await staffApi();
  const c = await customer(api, 'phone');
  assert.equal((await call(c.key)).status, 200);
  await usageRecords(c.id, 1);
  const { context, page } = await signedInContext(browser, c.email, { viewport: { width: 390, height: 844 } });
  await open(page, server.url + '/console/usage');
  const menu = page.getByTestId('console-menu');
  await menu.locator('summary').click();
  const links = await menu.getByRole('link').allTextContents();
  assert.deepEqual(links, ['Overview', 'Quick start', 'API keys', 'Usage', 'Plans', 'Billing', 'Invoices', 'Settings']);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px`);
  const box = await page.getByTestId('usage-row').first().boundingBox();
  assert.ok(box.width <= 390, `a log row is ${box.width}px wide`);
  await menu.getByRole('link', { name: 'Billing' }).click();
  await page.waitForURL(server.url + '/console/billing');
  await context.close();
});

/** Nothing on the page scrolls sideways, nor any table's box; every cell of `rows` spans the
 *  card (stacked), none squeezed into a narrow column. */
async function fitsPhone(page, rows) {
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px`);
  const boxes = await page.evaluate(() => [...document.querySelectorAll('table')].map((t) => t.parentElement.scrollWidth - t.parentElement.clientWidth));
  assert.ok(boxes.every((o) => o <= 0), `a table scrolls sideways: ${boxes}`);
  const widths = await page.getByTestId(rows).evaluateAll((trs) =>
    trs.flatMap((tr) => [...tr.children].filter((td) => td.offsetParent && td.textContent.trim()).map((td) => Math.round(td.getBoundingClientRect().width))));
  assert.ok(widths.length > 0, `no ${rows} cells`);
  assert.ok(widths.every((w) => w >= 280), `${rows} cells are squeezed: ${widths}`);
}

test('at 390 px the API keys and the ledger are stacked cards', async () => {
  const api = await staffApi();
  const c = await customer(api, 'phonecards');
  await api('POST', `/users/${c.id}/keys`, { name: 'a key with a rather long name for a phone', channel: 'value' });
  assert.equal((await call(c.key)).status, 200);
  await usageRecords(c.id, 1);
  const { context, page } = await signedInContext(browser, c.email, { viewport: { width: 390, height: 844 } });
  await open(page, server.url + '/console/keys');
  await fitsPhone(page, 'key-row');
  // each card still says what each figure is
  const labels = await page.getByTestId('key-row').first().locator('td[data-label]').evaluateAll((tds) => tds.map((td) => getComputedStyle(td, '::before').content));
  assert.ok(labels.includes('"Channel"'), labels.join(' '));
  // a top-up order waiting for payment, so Billing has an order row too
  await open(page, server.url + '/console/billing');
  await page.getByTestId('top-up-amount').fill('50');
  await page.locator('select[name="method"]').selectOption('sandbox');
  await page.getByRole('button', { name: 'Continue to payment' }).click();
  await page.waitForURL(/\/console\/pay\//);
  await open(page, server.url + '/console/billing');
  await fitsPhone(page, 'ledger-row');
  await fitsPhone(page, 'order-row');
  await context.close();
});
