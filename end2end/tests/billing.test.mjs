import { test } from 'node:test';
import assert from 'node:assert/strict';
import { server, browser, useServer, uniqueEmail, signUp, signInStaff, open, PASSWORD } from './harness.mjs';
import { buyStarter } from './helpers.mjs';

useServer();

/** A unified social credit code with a correct GB 32100-2015 check character. */
function creditCode(body17) {
  const chars = '0123456789ABCDEFGHJKLMNPQRTUWXY';
  const weights = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];
  const sum = [...body17].reduce((s, c, i) => s + chars.indexOf(c) * weights[i], 0);
  return body17 + chars[(31 - (sum % 31)) % 31];
}

test('choose a plan, pay in the sandbox, then request a refund that staff approve', async () => {
  const page = await browser.newPage();
  const email = uniqueEmail('buyer');
  await signUp(page, server.url, email);
  const amount = await buyStarter(page);
  assert.match(amount, /^¥\d+\.\d\d$/);
  await open(page, server.url + '/console/billing');
  const row = page.getByTestId('order-row').first();
  assert.match(await row.textContent(), /paid/i);

  // Issue #18: a plan paid from outside is one ledger line (the payment's credit and the
  // purchase's debit together), with no balance between them that the customer never had.
  const reference = (await row.locator('td').first().textContent()).match(/CR-[A-Z0-9]{6}/)[0];
  const lines = page.getByTestId('ledger-row').filter({ hasText: reference });
  await lines.first().waitFor();
  assert.equal(await lines.count(), 1, 'one ledger line for the plan order');
  assert.equal((await lines.getByTestId('ledger-amount').textContent()).replace('paid with sandbox payment', '').trim(), amount);
  await lines.getByTestId('ledger-paid-with').filter({ hasText: 'paid with sandbox payment' }).waitFor();
  const balances = await page.getByTestId('ledger-balance').allTextContents();
  assert.deepEqual(balances.filter((b) => b.trim() !== '¥0.00'), [], 'no phantom balance');

  // Within the 7-day window: the page shows the pro-rated computation before confirming.
  const refund = page.getByTestId('refund');
  assert.match(await refund.getByTestId('refund-explanation').textContent(), /¥/);
  await refund.getByRole('button', { name: /Request refund of ¥/ }).click();
  await page.getByRole('status').filter({ hasText: 'requested' }).waitFor();

  const staffEmail = uniqueEmail('support');
  server.cli('admin', 'create', '--email', staffEmail, '--password', PASSWORD);
  const staff = await browser.newPage();
  await signInStaff(staff, server.url, staffEmail);
  await open(staff, server.url + '/console/admin/billing');
  const request = staff.getByTestId('refund-request').filter({ hasText: email });
  await request.getByLabel('Note to the customer').fill('Sorry to see you go.');
  await request.getByRole('button', { name: 'Approve' }).click();
  await staff.getByRole('status').filter({ hasText: 'Refund approved.' }).waitFor();

  await open(page, server.url + '/console/billing');
  await page.getByText('You are on pay-as-you-go').waitFor();
  // Issue #18: the decision and support's note reach the customer, on Billing and by mail.
  const decided = page.getByTestId('my-refund').first();
  assert.match(await decided.getByTestId('refund-status').textContent(), /approved on .*back on your balance/);
  assert.match(await decided.getByTestId('refund-note').textContent(), /Sorry to see you go\./);
  const mail = await server.mail.nth(email, 2);
  assert.match(mail.subject, /refund is approved/);
  assert.match(mail.text, /Note from support: Sorry to see you go\./);
  assert.match(mail.text, /\/console\/billing/);
  assert.ok(await page.getByTestId('ledger-row').filter({ hasText: /refund/i }).count() >= 1);
  await open(staff, server.url + '/console/admin/audit');
  assert.ok(await staff.getByTestId('audit-row').filter({ hasText: 'refund' }).count() >= 1);
  await page.close();
  await staff.close();
});

test('request a special VAT invoice; staff issue it with a PDF; the customer downloads it', async () => {
  const page = await browser.newPage();
  const email = uniqueEmail('company');
  await signUp(page, server.url, email);
  await buyStarter(page);

  await open(page, server.url + '/console/invoices');
  await page.getByLabel('Special VAT invoice (company)').check();
  await page.getByLabel('Email for the invoice').fill(email);
  await page.getByLabel('Company name').fill('Hangzhou Example Technology Co., Ltd.');
  // A wrong check character is refused with a clear message.
  const good = creditCode('91330100MA2XXXXX0');
  const bad = good.slice(0, 17) + (good[17] === '1' ? '2' : '1');
  await page.getByLabel('Taxpayer ID (unified social credit code)').fill(bad);
  await page.getByLabel('Registered address').fill('1 West Lake Road, Hangzhou');
  await page.getByLabel('Registered phone').fill('0571-88888888');
  await page.getByLabel('Bank').fill('Bank of Hangzhou');
  await page.getByLabel('Account number').fill('3301040160000000000');
  await page.getByRole('button', { name: 'Request special VAT invoice' }).click();
  await page.getByRole('alert').filter({ hasText: /credit code|taxpayer/i }).waitFor();
  await page.getByLabel('Taxpayer ID (unified social credit code)').fill(good);
  await page.getByRole('button', { name: 'Request special VAT invoice' }).click();
  await page.getByRole('status').filter({ hasText: 'Invoice requested.' }).waitFor();
  await page.getByTestId('invoice-row').filter({ hasText: 'requested' }).waitFor();

  const staffEmail = uniqueEmail('finance');
  server.cli('admin', 'create', '--email', staffEmail, '--password', PASSWORD);
  const staff = await browser.newPage();
  await signInStaff(staff, server.url, staffEmail);
  await open(staff, server.url + '/console/admin/billing');
  const item = staff.getByTestId('invoice-request').filter({ hasText: 'Hangzhou Example' });
  await item.getByLabel('Invoice number').fill('33002611');
  await item.getByLabel('Issue date').fill('2026-11-25');
  await item.getByLabel('PDF (optional)').setInputFiles({ name: 'invoice.pdf', mimeType: 'application/pdf', buffer: Buffer.from('%PDF-1.4\n% test invoice\n%%EOF\n') });
  await item.getByRole('button', { name: 'Issue' }).click();
  await staff.waitForURL(server.url + '/console/admin/billing');

  await open(page, server.url + '/console/invoices');
  const issued = page.getByTestId('invoice-row').filter({ hasText: 'issued' });
  assert.match(await issued.textContent(), /33002611/);
  const href = await issued.getByRole('link', { name: 'Download PDF' }).getAttribute('href');
  const pdf = await page.request.get(server.url + href);
  assert.equal(pdf.status(), 200);
  assert.ok((await pdf.body()).toString().startsWith('%PDF'));
  // Nobody else can fetch it: a signed-out visitor is sent to sign in, another customer is refused.
  const stranger = await browser.newContext();
  const res = await stranger.request.get(server.url + href);
  assert.match(res.url(), /\/login\?next=/);
  assert.ok(!(await res.body()).toString().startsWith('%PDF'));
  const other = await stranger.newPage();
  await signUp(other, server.url, uniqueEmail('other'));
  const theirs = await other.request.get(server.url + href);
  assert.equal(theirs.status(), 404);
  await stranger.close();
  await page.close();
  await staff.close();
});

test('staff set up custom terms for a customer, who pays by bank transfer; staff confirm it', async () => {
  const page = await browser.newPage();
  const email = uniqueEmail('acme');
  await signUp(page, server.url, email);

  const staffEmail = uniqueEmail('sales');
  server.cli('admin', 'create', '--email', staffEmail, '--password', PASSWORD);
  const staff = await browser.newPage();
  await signInStaff(staff, server.url, staffEmail);
  await open(staff, server.url + '/console/admin?q=' + encodeURIComponent(email));
  await staff.getByRole('link', { name: email }).click();
  await staff.getByTestId('user-status').waitFor();
  await staff.locator('select[name=plan]').selectOption('ultra');
  await staff.getByRole('button', { name: 'Create the order' }).click();
  const created = staff.getByRole('status').filter({ hasText: /Order CR-\w+ created/ });
  await created.waitFor();
  const reference = (await created.textContent()).match(/CR-\w+/)[0];

  // The customer sees the order to pay, with the bank transfer instructions.
  await open(page, server.url + '/console/billing');
  const row = page.getByTestId('order-row').filter({ hasText: reference });
  assert.match(await row.textContent(), /bank transfer/i);
  await row.getByRole('link', { name: 'Pay' }).click();
  await page.getByText(reference).first().waitFor();

  await open(staff, server.url + '/console/admin/billing');
  await staff.getByTestId('transfer').filter({ hasText: email }).getByRole('button', { name: 'Confirm receipt' }).click();
  await staff.getByRole('status').filter({ hasText: 'Transfer confirmed' }).waitFor();
  await open(staff, server.url + '/console/admin/audit');
  assert.ok(await staff.locator('[data-testid="audit-row"][data-action="order.offer"]').filter({ hasText: 'set up plan' }).count() >= 1);

  await open(page, server.url + '/console/billing');
  await page.getByTestId('subscription').filter({ hasText: 'Ultra plan' }).waitFor();
  await page.close();
  await staff.close();
});
