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
    // A local demo server: its own secret, and the sandbox on (the run command's demo mode).
    const env = {
      ...process.env, DATABASE_URL: databaseUrl, LEPTOS_SITE_ADDR: `127.0.0.1:${port}`, RUST_LOG: 'warn',
      CLOUDROUTER_SECRET: randomBytes(32).toString('hex'), CLOUDROUTER_SANDBOX_PAYMENTS: '1',
    };
    const proc = spawn(bin, [], { cwd: ROOT, env, stdio: ['ignore', 'inherit', 'inherit'] });
    const server = new TestServer(proc, `http://127.0.0.1:${port}`, databaseUrl, admin, dbName, bin);
    await server.waitReady();
    return server;
  }

  constructor(proc, url, databaseUrl, admin, dbName, bin) {
    Object.assign(this, { proc, url, databaseUrl, admin, dbName, bin });
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

/** Signs up through the form and waits for the console. */
export async function signUp(page, base, email, password = PASSWORD) {
  await page.goto(base + '/signup');
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByLabel('Repeat password').fill(password);
  await page.getByRole('button', { name: 'Create account' }).click();
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
