// Issue #18: a refused action shows its reason next to its form, in the person's language, with
// the page intact — with JavaScript and without (a plain form post comes back to the page).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { server, browser, useServer, uniqueEmail, signUp, signInStaff, open, PASSWORD } from './harness.mjs';
import { buyStarter } from './helpers.mjs';

useServer();

async function paidOrderWithInvoiceRequest() {
  const page = await browser.newPage();
  const email = uniqueEmail('invoiced');
  await signUp(page, server.url, email);
  await buyStarter(page);
  await open(page, server.url + '/console/invoices');
  await page.getByLabel('Name (individual)').fill('Li Lei');
  await page.getByLabel('Email for the invoice').fill(email);
  await page.getByRole('button', { name: 'Request electronic invoice' }).click();
  await page.getByRole('status').filter({ hasText: 'Invoice requested.' }).waitFor();
  return { page, email };
}

/** Drops the browser's own checks, so the server's are what answer. */
async function noBrowserChecks(page) {
  await page.evaluate(() => document.querySelectorAll('[required]').forEach((e) => e.removeAttribute('required')));
}

test('issuing an invoice without a date, or with a JPG, answers next to the form in Chinese, with and without JavaScript', async () => {
  await paidOrderWithInvoiceRequest();
  const staffEmail = uniqueEmail('finance');
  server.cli('admin', 'create', '--email', staffEmail, '--password', PASSWORD);
  const staffContext = await browser.newContext();
  const staff = await staffContext.newPage();
  await signInStaff(staff, server.url, staffEmail);
  const url = new URL(server.url);
  await staffContext.addCookies([{ name: 'cloudrouter_lang', value: 'zh', domain: url.hostname, path: '/' }]);
  const noJs = await browser.newContext({ javaScriptEnabled: false, storageState: await staffContext.storageState() });

  for (const [page, js] of [[staff, true], [await noJs.newPage(), false]]) {
    await page.goto(server.url + '/console/admin/billing');
    const item = page.getByTestId('invoice-request').first();
    if (js) {
      // The browser would refuse an empty required date; without that check, the server answers.
      await noBrowserChecks(page);
      await item.locator('input[name="number"]').fill('33002612');
      await item.getByRole('button', { name: '开具' }).click();
      await page.waitForURL(/issue_error=date/);
    } else {
      // A plain form post with no date, as a browser without the check would send it.
      const action = await item.locator('form[enctype="multipart/form-data"]').getAttribute('action');
      const res = await page.request.post(server.url + action, {
        multipart: { number: '33002612', issued_on: '' }, maxRedirects: 0, headers: { accept: 'text/html' },
      });
      assert.equal(res.status(), 303, await res.text());
      await page.goto(server.url + res.headers()['location']);
    }
    await page.getByRole('heading', { name: '账务队列' }).waitFor();
    const error = page.getByTestId('invoice-request').first().getByTestId('issue-error');
    assert.equal((await error.textContent()).trim(), '请填写开票日期。');

    // A JPG instead of a PDF.
    const again = page.getByTestId('invoice-request').first();
    await again.locator('input[name="number"]').fill('33002612');
    await again.locator('input[name="issued_on"]').fill('2026-11-25');
    await again.locator('input[name="pdf"]').setInputFiles({ name: 'scan.jpg', mimeType: 'image/jpeg', buffer: Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 0x4a, 0x46, 0x49, 0x46]) });
    await again.getByRole('button', { name: '开具' }).click();
    await page.waitForURL(/issue_error=pdf/);
    await page.getByRole('heading', { name: '账务队列' }).waitFor();
    assert.match(await page.getByTestId('issue-error').textContent(), /不是 PDF/);
    assert.equal(server.sql(`SELECT count(*) FROM invoices WHERE status = 'issued'`), '0');
  }
  await noJs.close();
  await staffContext.close();
});

test('without JavaScript, a refused console form comes back to its page with the reason', async () => {
  const page = await browser.newPage();
  const email = uniqueEmail('nojs');
  await signUp(page, server.url, email);
  const noJs = await browser.newContext({ javaScriptEnabled: false, storageState: await page.context().storageState() });
  const p = await noJs.newPage();
  await p.goto(server.url + '/console/settings');
  await p.getByLabel('Current password').fill('not-my-password-1');
  await p.getByLabel('New password', { exact: true }).fill('Another-sturdy-2026');
  await p.getByLabel('Repeat new password').fill('Another-sturdy-2026');
  await p.getByRole('button', { name: 'Change password' }).click();
  await p.waitForLoadState('load');
  assert.ok(p.url().startsWith(server.url + '/console/settings'), p.url());
  await p.getByRole('heading', { name: 'Settings' }).waitFor();
  await p.getByRole('alert').filter({ hasText: 'Your current password is not right.' }).waitFor();
  await noJs.close();
  await page.close();
});
