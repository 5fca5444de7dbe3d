#!/usr/bin/env node
// The status page in a real browser (Debian's chromium, driven by puppeteer-core): starts the
// binary (role all, its own ports, breaker.open_seconds 3, ceilings 20/19/18), opens
// http://<admin>/ and checks, failing on any miss:
//   - the page loads with no console error, no page error, no failed request and no answer >= 400;
//   - the walkthrough's breaker trip (hey, every call failing): the page reads "open" within 2 s of
//     /metrics saying the breaker opened, and "closed" within 2 s of it closing after recovery;
//   - an operator's force-open (POST /admin/breaker): the page reads "forced open" within 2 s and
//     shows the override with the command that lifts it;
//   - an overload (hey -c 100 for 12 s, 300 ms calls, high priority): the in-flight bar reaches
//     the limit, and the shed rate the page shows 7 s in is within 10 % of what /metrics counted
//     (scraped every 100 ms) over the same seconds (the page's own window, read from it);
//   - a screenshot is saved (--screenshot, default loadtest/out/status-page.png).
// Loopback only; stops everything it started, even on failure.
//
// Usage: NODE_PATH=<dir with puppeteer-core> node .ci/status_page.cjs --binary target/debug/load-shed-api
//        [--screenshot PATH] [--chromium /usr/bin/chromium]
// Needs: chromium (Debian), hey, puppeteer-core (npm; .ci/run installs both).
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const puppeteer = require('puppeteer-core');

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith('--') ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []),
);
const ROOT = path.resolve(__dirname, '..');
const BINARY = path.resolve(args.binary || path.join(ROOT, 'target/debug/load-shed-api'));
const SHOT = path.resolve(args.screenshot || path.join(ROOT, 'loadtest/out/status-page.png'));
const CHROMIUM = args.chromium || '/usr/bin/chromium';
const OPEN_SECONDS = 3;

const results = [];
function check(ok, what) {
  results.push([ok, what]);
  console.log(`  ${ok ? 'ok  ' : 'FAIL'}  ${what}`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

function get(url, method = 'GET') {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`timeout: ${url}`)));
    req.end();
  });
}

/** The sum of the series of `name` whose labels include `labels`, from Prometheus text. */
function series(text, name, labels = {}) {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) total += Number(line.split(' ').pop());
  }
  return total;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function hey(argv) {
  return new Promise((resolve, reject) => {
    const p = spawn('hey', argv, { stdio: 'ignore' });
    p.on('error', reject);
    p.on('exit', resolve);
  });
}

async function until(what, probe, ms, every = 50) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await probe()) return true;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(every);
  }
}

async function main() {
  const [apiPort, upPort, adminPort] = [await freePort(), await freePort(), await freePort()];
  const api = `http://127.0.0.1:${apiPort}`;
  const admin = `http://127.0.0.1:${adminPort}`;
  const env = {
    PATH: process.env.PATH,
    RUST_LOG: 'warn',
    LOAD_SHED__API__LISTEN: `127.0.0.1:${apiPort}`,
    LOAD_SHED__UPSTREAM__LISTEN: `127.0.0.1:${upPort}`,
    LOAD_SHED__API__UPSTREAM_URL: `http://127.0.0.1:${upPort}`,
    LOAD_SHED__ADMIN__LISTEN: `127.0.0.1:${adminPort}`,
    LOAD_SHED__BREAKER__OPEN_SECONDS: String(OPEN_SECONDS),
    LOAD_SHED__ADMISSION__MAX_INFLIGHT: '20',
    LOAD_SHED__ADMISSION__NORMAL_MAX_INFLIGHT: '19',
    LOAD_SHED__ADMISSION__LOW_MAX_INFLIGHT: '18',
    LOAD_SHED__SHUTDOWN__DRAIN_DELAY_SECONDS: '0',
  };
  const log = fs.openSync(path.join(require('node:os').tmpdir(), `status-page-${process.pid}.log`), 'w');
  const service = spawn(BINARY, [], { env, stdio: ['ignore', log, log] });
  let browser;
  try {
    await until('the binary', async () => (await get(`${api}/healthz`).catch(() => ({}))).status === 200, 30000, 100);
    const metrics = async () => (await get(`${api}/metrics`)).body;
    const breakerState = async () => series(await metrics(), 'circuit_breaker_state');

    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    });
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 1000 });
    const problems = [];
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('requestfailed', (r) => problems.push(`failed request: ${r.url()} (${r.failure() && r.failure().errorText})`));
    page.on('response', (r) => { if (r.status() >= 400) problems.push(`answer ${r.status()}: ${r.url()}`); });

    await page.goto(`${admin}/`, { waitUntil: 'load' });
    const shown = () => page.$eval('#breaker-state', (el) => el.dataset.state);
    await until('the page shows the breaker', async () => (await shown()) === 'closed', 5000, 100);
    check(true, 'the page loaded and reads the breaker closed');

    console.log('baseline');
    await hey(['-n', '200', '-c', '10', `${api}/client?ms=5`]);

    console.log('trip the breaker');
    const tripping = hey(['-n', '50', '-c', '10', `${api}/client?ms=1&fail_rate=1.0`]);
    await until('/metrics says open', async () => (await breakerState()) === 1, 10000);
    const opened = Date.now();
    try {
      await until('the page says open', async () => (await shown()) === 'open', 2000, 25);
      check(true, `the page read "open" ${Date.now() - opened} ms after /metrics did (<= 2000)`);
    } catch (e) {
      check(false, `the page read "${await shown()}", not "open", within 2 s of the trip`);
    }
    await tripping;

    console.log(`recover (after ${OPEN_SECONDS} s)`);
    await sleep(OPEN_SECONDS * 1000 + 200);
    await hey(['-n', '100', '-c', '5', `${api}/client?ms=5&fail_rate=0.0`]);
    await until('/metrics says closed', async () => (await breakerState()) === 0, 10000);
    const closed = Date.now();
    try {
      await until('the page says closed', async () => (await shown()) === 'closed', 2000, 25);
      check(true, `the page read "closed" ${Date.now() - closed} ms after /metrics did (<= 2000)`);
    } catch (e) {
      check(false, `the page read "${await shown()}", not "closed", within 2 s of the recovery`);
    }

    console.log('an operator holds the breaker open');
    const forced = await get(`${admin}/admin/breaker?mode=force-open&for=1m`, 'POST');
    check(forced.status === 200, `POST /admin/breaker?mode=force-open answered ${forced.status}`);
    try {
      await until('the page says forced open', async () => (await shown()) === 'forced-open', 2000, 25);
      const banner = await page.$eval('#overrides', (el) => (el.hidden ? '' : el.textContent));
      check(banner.includes('load-shed-api admin breaker auto'),
        `the page read "forced open" and shows the override with the command that lifts it ("${banner.replace(/\s+/g, ' ').trim().slice(0, 90)}…")`);
    } catch (e) {
      check(false, `the page read "${await shown()}", not "forced-open", within 2 s of the override`);
    }
    await get(`${admin}/admin/breaker?mode=auto`, 'POST');
    await until('the page drops the override', async () => (await shown()) === 'closed', 3000, 25);

    console.log('overload');
    const scrapes = [];
    let barFull = null;
    let rate = null;
    let running = true;
    const started = Date.now();
    const overload = hey(['-z', '12s', '-c', '100', `${api}/client?ms=300&timeout_ms=1000&priority=high`])
      .then(() => { running = false; });
    while (running) {
      const text = await metrics();
      scrapes.push([Date.now() / 1000, series(text, 'http_requests_total', { path: '/client', status: '429' })]);
      const bar = await page.$eval('#bar-high', (el) => [Number(el.dataset.inflight), Number(el.dataset.limit)]);
      if (bar[0] >= bar[1] && bar[1] > 0) barFull = barFull || bar;
      // The shed rate as the page shows it, read mid-overload: its window (its last ten one-second
      // samples) then starts before the overload and ends inside it.
      if (!rate && Date.now() - started > 7000) {
        rate = await page.$eval('#rate-shed', (el) => ({
          count: Number(el.dataset.count), from: Number(el.dataset.from), to: Number(el.dataset.to), text: el.textContent,
        }));
      }
      await sleep(100);
    }
    await overload;
    check(barFull !== null, `the high-priority in-flight bar reached its limit during the overload (${barFull})`);
    const at = (t) => {
      // The counter at time t, interpolated between the scrapes around it.
      let before = scrapes[0];
      for (const s of scrapes) {
        if (s[0] <= t) before = s;
        else return before[1] + ((s[1] - before[1]) * (t - before[0])) / Math.max(1e-9, s[0] - before[0]);
      }
      return scrapes[scrapes.length - 1][1];
    };
    const counted = at(rate.to) - at(rate.from);
    const diff = counted > 0 ? Math.abs(rate.count - counted) / counted : Infinity;
    check(rate.count > 0 && diff <= 0.1,
      `the page's shed count ${rate.count} over ${(rate.to - rate.from).toFixed(1)} s ("${rate.text}") is within 10 % of `
      + `/metrics' ${counted.toFixed(0)} over the same seconds (${(100 * diff).toFixed(1)} %)`);

    await sleep(1000);
    fs.mkdirSync(path.dirname(SHOT), { recursive: true });
    await page.screenshot({ path: SHOT, fullPage: true });
    check(fs.statSync(SHOT).size > 10000, `screenshot saved: ${path.relative(process.cwd(), SHOT)}`);
    check(problems.length === 0, `no console error, page error, failed request or error answer${problems.length ? `: ${problems.join('; ')}` : ''}`);
  } finally {
    if (browser) await browser.close();
    service.kill('SIGINT');
  }
}

main()
  .catch((e) => check(false, `stopped: ${e.message}`))
  .finally(() => {
    const failed = results.filter(([ok]) => !ok).length;
    console.log(`\nstatus page: ${results.length - failed} passed, ${failed} failed`);
    process.exitCode = failed ? 1 : 0;
  });
