// Issue #17: coding-plan windows. Staff cap what the Starter plan's allowance pays per 5 hours;
// past the cap a call is refused with 429 naming the window, the Overview shows the window and
// the choice, and a customer who chooses pay-as-you-go past the cap is served.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { server, browser, useServer, signInStaff, open } from './harness.mjs';
import { staffApi, customer, call, usageRecords, signedInContext, buyStarter } from './helpers.mjs';

useServer();

test('past a 5-hour cap a call gets 429 naming the window until the customer chooses pay-as-you-go', async () => {
  const api = await staffApi();
  const c = await customer(api, 'windows', '50');

  // staff cap the window below one request's worst case ($0.02 < about $0.026 held)
  const staff = await browser.newPage();
  await signInStaff(staff, server.url, api.email);
  await open(staff, server.url + '/console/admin/plans');
  const row = staff.locator('[data-plan="starter"]');
  await row.getByLabel('$ per 5 hours').fill('0.02');
  await row.getByRole('button', { name: 'Save' }).click();
  await row.getByText('Plan Starter saved').waitFor();
  await open(staff, server.url + '/console/plans');
  await staff.getByTestId('plan-card').filter({ hasText: 'Starter' }).getByText('$0.02 per 5 hours').waitFor();

  const { context, page } = await signedInContext(browser, c.email);
  await buyStarter(page);
  await open(page, server.url + '/console');
  const windows = page.getByTestId('plan-windows');
  const line = windows.getByTestId('plan-window');
  assert.match(await line.textContent(), /5-hour window.*\$0\.00 of \$0\.02 used.*opens with your next request/);
  assert.match(await windows.getByTestId('plan-overflow').textContent(), /refused \(429\) until the window resets/);

  const refused = await call(c.key);
  assert.equal(refused.status, 429);
  const err = await refused.json();
  assert.equal(err.error.type, 'rate_limit_error');
  assert.match(err.error.message, /Starter plan's 5-hour usage limit \(\$0\.02 of list price\) is reached/);
  const balance = () => Number(server.sql(`SELECT balance_micros FROM balances WHERE user_id = '${c.id}'`));
  const before = balance();

  await windows.getByTestId('plan-overflow-toggle').click();
  await windows.getByTestId('plan-overflow').filter({ hasText: 'requests go on at pay-as-you-go prices' }).waitFor();
  await new Promise((r) => setTimeout(r, 300)); // the gateway's cached key follows a notification
  const served = await call(c.key);
  assert.equal(served.status, 200, await served.text());
  await usageRecords(c.id, 2);

  // the allowance paid within the cap and opened the window; nothing went on the balance yet
  await open(page, server.url + '/console');
  const opened = await page.getByTestId('plan-window').textContent();
  assert.match(opened, /5-hour window.*\$0\.0\d+ of \$0\.02 used.*resets \d/, opened);
  assert.doesNotMatch(opened, /\$0\.00 of/);
  assert.equal(balance(), before);
  await context.close();
  await staff.close();
});
