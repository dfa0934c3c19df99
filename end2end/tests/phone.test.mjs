// Issue #18: at phone width (390 px) the console navigation is a menu that reaches every section,
// and the request log stacks instead of scrolling sideways.
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
