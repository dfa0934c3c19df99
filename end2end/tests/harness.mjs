// Starts the real server against a fresh Postgres database and drives headless Chromium.
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:net';
import { randomBytes, createHmac } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { before, after } from 'node:test';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

function psql(url, sql) {
  execFileSync('psql', [url, '-qAtc', sql], { stdio: 'pipe' });
}

/** A real SMTP server (plain RFC 5321 dialogue) that keeps what the server under test mails. */
export class MailCatcher {
  static start() {
    const catcher = new MailCatcher();
    return new Promise((resolve) => {
      catcher.srv = createServer((socket) => catcher.session(socket));
      catcher.srv.listen(0, '127.0.0.1', () => {
        catcher.url = `smtp://127.0.0.1:${catcher.srv.address().port}`;
        resolve(catcher);
      });
    });
  }

  constructor() {
    this.inbox = [];
  }

  session(socket) {
    let buffer = '';
    let to = [];
    let data = null;
    socket.write('220 e2e-smtp ESMTP ready\r\n');
    socket.on('data', (chunk) => {
      buffer += chunk.toString('utf8');
      let at;
      while ((at = buffer.indexOf('\r\n')) >= 0) {
        const line = buffer.slice(0, at);
        buffer = buffer.slice(at + 2);
        if (data !== null) {
          if (line === '.') {
            this.inbox.push({ to, data: data.join('\r\n') });
            data = null;
            to = [];
            socket.write('250 OK queued\r\n');
          } else {
            data.push(line.startsWith('..') ? line.slice(1) : line);
          }
          continue;
        }
        const verb = line.split(' ')[0].toUpperCase();
        if (verb === 'EHLO') socket.write('250-e2e-smtp\r\n250 8BITMIME\r\n');
        else if (verb === 'RCPT') {
          to.push(line.slice(line.indexOf(':') + 1).trim().replace(/^</, '').replace(/>.*$/, '').toLowerCase());
          socket.write('250 OK\r\n');
        } else if (verb === 'DATA') {
          data = [];
          socket.write('354 end with <CRLF>.<CRLF>\r\n');
        } else if (verb === 'QUIT') socket.end('221 bye\r\n');
        else if (['HELO', 'MAIL', 'RSET', 'NOOP'].includes(verb)) socket.write('250 OK\r\n');
        else socket.write('502 command not implemented\r\n');
      }
    });
    socket.on('error', () => {});
  }

  /** Mail delivered to `to` so far: `{ subject, text }` (the server sends base64 plain text). */
  to(to) {
    return this.inbox.filter((m) => m.to.includes(to.toLowerCase())).map(({ data }) => {
      const [head, ...body] = data.split('\r\n\r\n');
      const subject = (head.match(/^Subject: (.*)$/m) || [])[1];
      return { subject, text: Buffer.from(body.join('').replace(/\s+/g, ''), 'base64').toString('utf8') };
    });
  }

  /** Waits (up to 15 s) for the `n`-th mail to `to`. */
  async nth(to, n) {
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      const mail = this.to(to)[n - 1];
      if (mail) return mail;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`no mail #${n} to ${to} within 15 s`);
  }

  /** The link to `path` in the `n`-th mail to `to`. */
  async link(to, n, path) {
    const { text } = await this.nth(to, n);
    const found = text.match(new RegExp(`https?://\\S+${path}\\?token=[A-Za-z0-9]+`));
    if (!found) throw new Error(`no ${path} link in: ${text}`);
    return found[0];
  }

  close() {
    this.srv.close();
  }
}

export class TestServer {
  static async start() {
    const admin = process.env.DATABASE_URL;
    if (!admin) throw new Error('DATABASE_URL (an admin connection) is required');
    const bin = process.env.SERVER_BIN;
    if (!bin) throw new Error('SERVER_BIN (the built server binary) is required');
    const dbName = `e2e_${randomBytes(6).toString('hex')}`;
    psql(admin, `CREATE DATABASE ${dbName}`);
    const databaseUrl = admin.replace(/\/[^/]*$/, `/${dbName}`);
    const port = await freePort();
    const mail = await MailCatcher.start();
    // A local demo server: its own secret, and the sandbox on (the run command's demo mode).
    const env = {
      ...process.env, DATABASE_URL: databaseUrl, LEPTOS_SITE_ADDR: `127.0.0.1:${port}`, RUST_LOG: 'warn',
      CLOUDROUTER_SECRET: randomBytes(32).toString('hex'), CLOUDROUTER_SANDBOX_PAYMENTS: '1', CLOUDROUTER_SMTP_URL: mail.url,
    };
    const proc = spawn(bin, [], { cwd: ROOT, env, stdio: ['ignore', 'inherit', 'inherit'] });
    const server = new TestServer(proc, `http://127.0.0.1:${port}`, databaseUrl, admin, dbName, bin, mail);
    await server.waitReady();
    return server;
  }

  constructor(proc, url, databaseUrl, admin, dbName, bin, mail) {
    Object.assign(this, { proc, url, databaseUrl, admin, dbName, bin, mail });
  }

  async waitReady() {
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null) throw new Error(`server exited with ${this.proc.exitCode}`);
      try {
        const res = await fetch(this.url + '/login');
        if (res.ok) return;
      } catch { /* not listening yet */ }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error('server did not start within 60 s');
  }

  /** Runs a server subcommand (e.g. `admin create`) against the same database. */
  cli(...args) {
    return execFileSync(this.bin, args, { cwd: ROOT, env: { ...process.env, DATABASE_URL: this.databaseUrl, RUST_LOG: 'warn' } }).toString();
  }

  sql(query) {
    return execFileSync('psql', [this.databaseUrl, '-qAtc', query]).toString().trim();
  }

  async stop() {
    this.proc.kill('SIGTERM');
    await new Promise((r) => (this.proc.exitCode !== null ? r() : this.proc.once('exit', r)));
    this.mail.close();
    psql(this.admin, `DROP DATABASE IF EXISTS ${this.dbName} WITH (FORCE)`);
  }
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-background-networking', '--disable-gpu', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}

export function uniqueEmail(tag) {
  return `${tag}-${randomBytes(4).toString('hex')}@example.com`;
}

export const PASSWORD = 'Sturdy-pass-2026';

/** Signs up through the form (in any language), opens the link the server mails, finishes and
 *  waits for the console. */
export async function signUp(page, base, email, password = PASSWORD) {
  const n = server.mail.to(email).length + 1;
  await page.goto(base + '/signup');
  await page.locator('input[name="email"]').fill(email);
  await page.locator('input[name="password"]').fill(password);
  await page.locator('input[name="confirm"]').fill(password);
  await page.locator('form button[type="submit"]').last().click();
  await page.waitForURL(base + '/signup/sent');
  await page.goto(await server.mail.link(email, n, '/signup/confirm'));
  // a plain form post before hydration (or with JavaScript off) finishes it too
  await page.locator('form button[type="submit"]').last().click();
  await page.waitForURL(base + '/console');
}

export async function signIn(page, base, email, password = PASSWORD) {
  await page.goto(base + '/login');
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

/** The code an authenticator app shows for a base32 `secret`, `steps` 30-second steps from now (RFC 6238). */
export function totpCode(secret, steps = 0) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of secret.replace(/=+$/, '').toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 30000) + steps));
  const h = createHmac('sha1', key).update(counter).digest();
  const at = h[19] & 0x0f;
  return String((h.readUInt32BE(at) & 0x7fffffff) % 1000000).padStart(6, '0');
}

/** Turns two-factor sign-in on in Settings, playing the authenticator app (staff need it before
 *  any admin page). Uses the previous step's code, so the current one is still new afterwards. */
export async function setUpTwoFactor(page, base) {
  await page.goto(base + '/console/settings');
  await page.getByRole('button', { name: 'Set up two-factor sign-in' }).click();
  const secret = (await page.getByTestId('totp-secret').textContent()).trim();
  // The server accepts the previous, current and next step: the previous step's code, made just
  // before a step ends, is two steps old when it arrives after the change. Start a step afresh
  // when less than 5 s of it are left.
  const left = 30000 - (Date.now() % 30000);
  if (left < 5000) await new Promise((resolve) => setTimeout(resolve, left + 100));
  await page.getByLabel('Code').fill(totpCode(secret, -1));
  await page.getByRole('button', { name: 'Turn on two-factor sign-in' }).click();
  await page.getByTestId('recovery-codes').waitFor();
}

/** Signs a staff account made by `server admin create` in for the first time and sets up its
 *  two-factor sign-in. */
export async function signInStaff(page, base, email, password = PASSWORD) {
  await signIn(page, base, email, password);
  await page.waitForURL(base + '/console');
  await setUpTwoFactor(page, base);
}

/** Navigates and waits until the page has hydrated, so clicks go through the app, not a plain form post. */
export async function open(page, url) {
  await page.goto(url);
  await page.locator('body[data-hydrated]').waitFor();
}

/** The server and browser of the current test file (live bindings, set by `useServer`). */
export let server;
export let browser;

/** Starts one server on a fresh database and one browser for the test file, and stops them after. */
export function useServer() {
  before(async () => {
    server = await TestServer.start();
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });
}
