// Issue #18: a new key's secret has a Copy button and says plainly it will not be shown again;
// the create form is empty again afterwards; revoking asks for confirmation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { server, browser, useServer, open } from './harness.mjs';
import { staffApi, customer, signedInContext } from './helpers.mjs';

useServer();

test('the one-time secret copies, says it will not be seen again, and the form clears; revoking asks first', async () => {
  const api = await staffApi();
  const c = await customer(api, 'keys-once');
  const { context, page } = await signedInContext(browser, c.email);
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.url });
  await open(page, server.url + '/console/keys');
  await page.getByLabel('Name').fill('laptop');
  await page.getByLabel('Spending limit (¥, optional)').fill('30');
  await page.getByRole('button', { name: 'Create key' }).click();
  const secret = (await page.getByTestId('new-key-secret').textContent()).trim();
  assert.match(await page.getByTestId('shown-once').textContent(), /will not see this secret again/);
  await page.getByTestId('copy-secret').click();
  await page.getByTestId('copy-secret').filter({ hasText: 'Copied' }).waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
  // The form is ready for the next key.
  assert.equal(await page.getByLabel('Name').inputValue(), '');
  assert.equal(await page.getByLabel('Spending limit (¥, optional)').inputValue(), '');

  // Revoke asks before it acts.
  await page.getByLabel('Revoke laptop').click();
  await page.getByText('Revoke “laptop”? Calls with it stop at once').waitFor();
  assert.equal(server.sql(`SELECT count(*) FROM api_keys WHERE user_id = '${c.id}' AND revoked_at IS NOT NULL`), '0');
  await page.getByRole('button', { name: 'Yes, revoke it' }).click();
  await page.getByRole('status').filter({ hasText: 'Key revoked.' }).waitFor();
  await context.close();
});
