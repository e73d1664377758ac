// End-to-end test of warren's web terminal in a real browser.
//
// Starts `warren serve` (real sandboxes, private state and workspace dirs, a
// free port on 127.0.0.1), drives Debian's chromium with playwright-core, and
// checks what a user sees: login, a shell, resizing, reload/reattach, that
// a second user can't see the first one's files, warren-info, and files in
// (dropped onto the page) and out (warren-download). See README.md.
//
// Output: one line per check, then `N passed, M failed`. Exit status 0 only if
// every check passed. Everything is bounded: each wait has a timeout and a
// watchdog ends the whole run after WARREN_E2E_DEADLINE_MS (default 150 s).

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const WARREN_BIN = process.env.WARREN_BIN || path.join(REPO, 'target', 'debug', 'warren');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OUT = process.env.WARREN_E2E_OUT || path.join(HERE, 'out');
const DEADLINE_MS = Number(process.env.WARREN_E2E_DEADLINE_MS || 150000);
const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
// Viewports for the resize check: the starting one, a bigger and a smaller one.
const VIEW_START = { width: 1024, height: 640 };
const VIEW_BIG = { width: 1440, height: 900 };
const VIEW_SMALL = { width: 720, height: 420 };

const started = Date.now();
const log = (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Under CI a check that cannot run fails instead of skipping.
const MUST_RUN = ['true', '1'].includes(process.env.CI) || process.env.WARREN_MUST_RUN === '1';

// ---------------------------------------------------------------- bookkeeping

const CHECKS = [
  [1, 'server starts and prints a login URL'],
  [2, 'alice logs in, gets a shell prompt (permessage-deflate negotiated), whoami says alice'],
  [3, 'resizing the window resizes the terminal (stty size follows)'],
  [4, 'reload reattaches to the same terminal: screen and shell state kept'],
  [5, 'bob, in another browser context, cannot see alice\'s files'],
  [6, 'warren-info and container-info typed into the terminal print the sandbox\'s facts'],
  [7, 'a file dropped onto the page lands in the home with its contents'],
  [8, 'warren-download FILE offers a link that downloads the file'],
  [9, 'alice\'s terminal reaches the (fake) internet: curl to the fake upstream works, the host\'s service is refused'],
  [10, 'a service alice creates from her page (POST /api/me/services) is listed on it: name and state'],
  [11, 'alice opens her app\'s preview from the page\'s list of open ports and sees it; bob gets 403 for it'],
];
let browser = null;
let finishing = false; // set once the run is being wound up
const results = new Map(); // number -> { ok, detail }
const shots = [];

class CheckFailed extends Error {}
function expect(cond, what) {
  if (!cond) throw new CheckFailed(what);
}

async function check(n, fn, { needs = [], budgetMs = 40000 } = {}) {
  const title = CHECKS.find(([k]) => k === n)[1];
  if (finishing) return false; // the watchdog or a signal is ending the run
  const missing = needs.filter((k) => !results.get(k)?.ok);
  if (missing.length) {
    results.set(n, { ok: false, detail: `not run: needs check ${missing.join(', ')}` });
    log(`FAIL ${n}. ${title} (not run: needs check ${missing.join(', ')})`);
    return false;
  }
  log(`---- ${n}. ${title}`);
  let timer;
  try {
    const budget = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new CheckFailed(`check took longer than ${budgetMs} ms`)), budgetMs);
    });
    const detail = await Promise.race([fn(), budget]);
    results.set(n, { ok: true, detail: detail || '' });
    log(`PASS ${n}. ${title}${detail ? ` (${detail})` : ''}`);
    return true;
  } catch (e) {
    const detail = e instanceof CheckFailed ? e.message : (e && e.stack) || String(e);
    results.set(n, { ok: false, detail });
    log(`FAIL ${n}. ${title}: ${detail}`);
    for (const tab of tabs) {
      await Promise.race([tab.shot(`failed-check${n}-${tab.name}.png`).catch(() => {}), sleep(5000)]);
    }
    return false;
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------- the server

const tabs = []; // every Tab, for screenshots when a check fails
let server = null; // { proc, stderr: string, exited: Promise }
let tmpDir = null;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function startServer() {
  expect(fs.existsSync(WARREN_BIN), `no warren binary at ${WARREN_BIN} (run cargo build --workspace, or set WARREN_BIN)`);
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-e2e-'));
  // mkdtemp makes it 0700. The tenants' uids must be able to traverse it to
  // reach their workspace (the server makes ws/ itself 0711); with 0700 the
  // sandbox fails with "open <root>/alice: Permission denied".
  fs.chmodSync(tmpDir, 0o711);
  const port = await freePort();
  const args = [
    'serve',
    '--listen', `127.0.0.1:${port}`,
    '--state-dir', path.join(tmpDir, 'state'),
    '--workspace-root', path.join(tmpDir, 'ws'),
    '--shutdown-timeout', '5s',
    // Plain homes: checks 4 and 5 look at alice's home from the host, and a
    // disk-image home (the default as root) is mounted only in its sandbox.
    '--disk', 'none', '--disk-inodes', 'none',
  ];
  log(`starting ${WARREN_BIN} ${args.join(' ')}`);
  const serverLog = fs.createWriteStream(path.join(OUT, 'server.log'));
  const proc = spawn(WARREN_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  server = { proc, stderr: '', port, exited: once(proc, 'exit').catch(() => {}) };
  proc.stdout.on('data', (d) => serverLog.write(d));
  proc.stderr.on('data', (d) => {
    serverLog.write(d);
    server.stderr += d.toString();
  });
  proc.on('exit', (code, signal) => {
    server.exitCode = code;
    server.exitSignal = signal;
    serverLog.end();
  });

  const re = new RegExp(`^\\s*(http://127\\.0\\.0\\.1:${port}/login\\?token=[A-Za-z0-9_-]+)\\s*$`, 'm');
  const until = Date.now() + 20000;
  for (;;) {
    const m = server.stderr.match(re);
    if (m) return { port, loginUrl: m[1] };
    if (server.exitCode !== undefined || server.exitSignal) {
      throw new CheckFailed(`server exited (code ${server.exitCode}, signal ${server.exitSignal}) before printing a login URL; stderr:\n${server.stderr}`);
    }
    if (Date.now() > until) throw new CheckFailed(`no login URL on the server's stderr within 20 s; stderr:\n${server.stderr}`);
    await sleep(50);
  }
}

async function stopServer() {
  if (!server || server.exitCode !== undefined || server.exitSignal) return;
  const { proc } = server;
  log(`stopping the server (pid ${proc.pid}): SIGTERM`);
  proc.kill('SIGTERM');
  const done = await Promise.race([server.exited.then(() => true), sleep(8000).then(() => false)]);
  if (!done) {
    log('the server did not exit within 8 s of SIGTERM: SIGKILL');
    proc.kill('SIGKILL');
    await Promise.race([server.exited, sleep(3000)]);
  } else {
    log(`server exited (code ${server.exitCode}, signal ${server.exitSignal})`);
  }
}

// ---------------------------------------------------------------- the page

// One browser tab and what it has seen on its WebSockets. The page's own code
// is left alone: the hooks are Playwright's WebSocket events and the DOM that
// xterm.js renders (its default DOM renderer: one <div> per row in .xterm-rows).
class Tab {
  constructor(name, page) {
    this.name = name;
    this.page = page;
    this.hellos = []; // hello frames received
    this.resizes = []; // resize frames sent
    this.closes = []; // sockets closed
    this.seq = 0;
    page.on('websocket', (ws) => {
      ws.on('framereceived', ({ payload }) => {
        if (typeof payload !== 'string') return;
        try {
          const msg = JSON.parse(payload);
          if (msg.type === 'hello') this.hellos.push(msg);
        } catch { /* not ours */ }
      });
      ws.on('framesent', ({ payload }) => {
        if (typeof payload !== 'string') return;
        try {
          const msg = JSON.parse(payload);
          if (msg.type === 'resize') this.resizes.push(msg);
        } catch { /* not ours */ }
      });
      ws.on('close', () => this.closes.push(ws.url()));
    });
    page.on('pageerror', (e) => log(`[${name}] page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') log(`[${name}] console: ${m.text()}`); });
  }

  async waitFor(what, fn, timeoutMs = 15000, everyMs = 100) {
    const until = Date.now() + timeoutMs;
    let last;
    for (;;) {
      last = await fn();
      if (last) return last;
      if (Date.now() > until) throw new CheckFailed(`[${this.name}] timed out after ${timeoutMs} ms waiting for ${what}`);
      await sleep(everyMs);
    }
  }

  async waitForHello(count, timeoutMs = 20000) {
    await this.waitFor(`hello frame #${count}`, async () => this.hellos.length >= count, timeoutMs);
    return this.hellos[count - 1];
  }

  // The terminal's visible rows as text, trailing blanks trimmed.
  async screen() {
    return this.page.$$eval('.xterm-rows > div', (rows) =>
      rows.map((r) => r.textContent.replace(/\u00a0/g, ' ').replace(/\s+$/, '')));
  }

  async screenText() {
    return (await this.screen()).join('\n');
  }

  async waitForPrompt(timeoutMs = 20000) {
    return this.waitFor('a shell prompt', async () => {
      const rows = (await this.screen()).filter((r) => r.trim() !== '');
      const last = rows[rows.length - 1];
      return last && /[$#%>]$/.test(last.trimEnd()) ? last : null;
    }, timeoutMs);
  }

  // Types `cmd` followed by an echo of a marker computed by the shell (so the
  // typed line never matches it), waits for the marker and returns the output
  // rows between the command line and the marker. A command that clears the
  // screen (`clear`) wipes its own command line: pass { clears: true }.
  async run(cmd, { timeoutMs = 15000, clears = false } = {}) {
    const n = ++this.seq;
    const typed = `$((9000+${n}))`;
    const marker = `<${9000 + n}>`;
    await this.page.keyboard.type(`${cmd}; echo "<${typed}>"`);
    await this.page.keyboard.press('Enter');
    const rows = await this.waitFor(`the output of \`${cmd}\``, async () => {
      const s = await this.screen();
      return s.some((r) => r.trim() === marker) ? s : null;
    }, timeoutMs);
    let end = -1;
    for (let i = rows.length - 1; i >= 0; i--) if (rows[i].trim() === marker) { end = i; break; }
    let start = -1;
    for (let i = end - 1; i >= 0; i--) if (rows[i].includes(typed)) { start = i; break; }
    if (clears) {
      expect(start < 0 && rows.slice(0, end).every((r) => r.trim() === ''),
        `[${this.name}] \`${cmd}\` did not clear the screen:\n${rows.join('\n')}`);
      return [];
    }
    expect(start >= 0, `[${this.name}] command line of \`${cmd}\` not found on the screen:\n${rows.join('\n')}`);
    return rows.slice(start + 1, end);
  }

  async shot(file) {
    const p = path.join(OUT, file);
    await this.page.screenshot({ path: p, timeout: 10000 });
    shots.push(p);
    log(`[${this.name}] screenshot ${path.relative(process.cwd(), p)}`);
  }
}

async function openTab(browser, name, loginUrl, viewport = VIEW_START) {
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(10000);
  context.setDefaultNavigationTimeout(15000);
  const page = await context.newPage();
  const tab = new Tab(name, page);
  tab.context = context;
  tabs.push(tab);
  // The WebSocket handshakes' answers, through the DevTools protocol
  // (Playwright's WebSocket events carry no headers): check 2 reads which
  // extensions the server agreed to.
  tab.extensions = [];
  const cdp = await context.newCDPSession(page);
  cdp.on('Network.webSocketHandshakeResponseReceived', ({ response }) => {
    const h = Object.entries(response.headers || {})
      .find(([k]) => k.toLowerCase() === 'sec-websocket-extensions');
    tab.extensions.push(h ? h[1] : '');
  });
  await cdp.send('Network.enable');
  const url = `${loginUrl}&user=${encodeURIComponent(name)}`;
  const resp = await page.goto(url, { waitUntil: 'load' });
  expect(resp && resp.ok(), `[${name}] login page answered ${resp && resp.status()}`);
  const here = new URL(page.url());
  expect(here.pathname === '/', `[${name}] login did not land on / but on ${page.url()}`);
  expect(!here.search.includes('token='), `[${name}] the token stayed in the page URL: ${page.url()}`);
  return tab;
}

async function sttySize(tab) {
  const out = (await tab.run('stty size')).map((r) => r.trim()).filter(Boolean);
  const m = out.length === 1 && out[0].match(/^(\d+) (\d+)$/);
  expect(m, `[${tab.name}] unexpected stty size output: ${JSON.stringify(out)}`);
  return { rows: Number(m[1]), cols: Number(m[2]) };
}

// Sets the viewport, waits for the page to send its resize and for the DOM to
// show that many rows, then asks the shell.
async function resizeTo(tab, viewport) {
  const before = tab.resizes.length;
  await tab.page.setViewportSize(viewport);
  const sent = await tab.waitFor(`a resize frame after setViewportSize(${viewport.width}x${viewport.height})`,
    async () => (tab.resizes.length > before ? tab.resizes[tab.resizes.length - 1] : null), 10000);
  // Let any second debounced fit settle.
  await sleep(300);
  const last = tab.resizes[tab.resizes.length - 1];
  const domRows = await tab.waitFor('the DOM rows to match the resize',
    async () => { const n = (await tab.screen()).length; return n === last.rows ? n : null; }, 5000);
  const size = await sttySize(tab);
  log(`[${tab.name}] viewport ${viewport.width}x${viewport.height}: page sent ${sent.cols}x${sent.rows}` +
    `${last !== sent ? ` then ${last.cols}x${last.rows}` : ''}, DOM rows ${domRows}, stty size ${size.rows} ${size.cols}`);
  expect(size.rows === last.rows && size.cols === last.cols,
    `[${tab.name}] stty says ${size.rows} rows ${size.cols} cols but the page sent ${last.rows} rows ${last.cols} cols`);
  return size;
}

// ---------------------------------------------------------------- the run


async function finish(reason) {
  if (finishing) return;
  finishing = true;
  if (reason) log(reason);
  if (browser) {
    await Promise.race([browser.close().catch(() => {}), sleep(5000)]);
  }
  await stopServer().catch((e) => log(`stopping the server: ${e}`));
  for (const [n, title] of CHECKS) {
    if (!results.has(n)) results.set(n, { ok: false, detail: 'not run' });
    const r = results.get(n);
    if (!r.ok && r.detail === 'not run') log(`FAIL ${n}. ${title} (not run)`);
  }
  const passed = [...results.values()].filter((r) => r.ok).length;
  const failed = CHECKS.length - passed;
  if (tmpDir) {
    if (failed === 0) fs.rmSync(tmpDir, { recursive: true, force: true });
    else log(`kept ${tmpDir} for inspection; server log: ${path.join(OUT, 'server.log')}`);
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

const watchdog = setTimeout(() => {
  finish(`watchdog: the run exceeded ${DEADLINE_MS} ms, giving up`);
}, DEADLINE_MS);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => finish(`got ${sig}`));

async function main() {
  fs.mkdirSync(OUT, { recursive: true });
  for (const f of fs.readdirSync(OUT)) if (f.endsWith('.png')) fs.rmSync(path.join(OUT, f));

  let login = null;
  await check(1, async () => {
    login = await startServer();
    return `port ${login.port}`;
  }, { budgetMs: 25000 });
  if (!results.get(1).ok) return;

  expect(fs.existsSync(CHROMIUM), `no chromium at ${CHROMIUM}`);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30000,
  });
  log(`chromium ${browser.version()}`);

  let alice = null;
  let aliceScreenBefore = null; // whoami output for check 4
  await check(2, async () => {
    alice = await openTab(browser, 'alice', login.loginUrl);
    const hello = await alice.waitForHello(1);
    expect(hello.user === 'alice', `hello says user ${hello.user}`);
    expect(await alice.page.locator('.xterm-rows').count() === 1,
      'no .xterm-rows in the page (xterm.js renderer changed?)');
    const prompt = await alice.waitForPrompt();
    await alice.page.focus('.xterm-helper-textarea');
    const out = (await alice.run('whoami')).map((r) => r.trim()).filter(Boolean);
    expect(out.length === 1 && out[0] === 'alice', `whoami printed ${JSON.stringify(out)}`);
    const title = await alice.page.title();
    // The page names the tier and, on hover, the limits in force.
    const badge = alice.page.locator('#tier');
    expect(await badge.isVisible(), 'no isolation badge on the page');
    const badgeText = `isolation: ${hello.tier}` + (hello.network ? ` · network: ${hello.network.mode}` : '');
    expect((await badge.textContent()) === badgeText,
      `badge says ${JSON.stringify(await badge.textContent())}, hello says tier ${hello.tier}, network ${JSON.stringify(hello.network)}`);
    expect(hello.limits && (await badge.getAttribute('title')).startsWith('limits: '),
      `no limits in the hello frame or the badge: ${JSON.stringify(hello.limits)}`);
    // Chromium offers permessage-deflate; warren agrees (docs/protocol.md#compression).
    const ext = alice.extensions[0] || '';
    expect(ext.startsWith('permessage-deflate'),
      `the terminal's WebSocket negotiated no permessage-deflate: ${JSON.stringify(alice.extensions)}`);
    await alice.shot('alice-whoami.png');
    return `tier ${hello.tier}, prompt "${prompt.trim()}", title "${title}", extensions "${ext}"`;
  }, { needs: [1] });

  await check(3, async () => {
    const first = await sttySize(alice);
    log(`[alice] start: stty size ${first.rows} ${first.cols}`);
    const big = await resizeTo(alice, VIEW_BIG);
    expect(big.rows > first.rows && big.cols > first.cols,
      `bigger viewport: ${big.rows}x${big.cols} is not bigger than ${first.rows}x${first.cols}`);
    await alice.shot('alice-big.png');
    const small = await resizeTo(alice, VIEW_SMALL);
    expect(small.rows < first.rows && small.cols < first.cols,
      `smaller viewport: ${small.rows}x${small.cols} is not smaller than ${first.rows}x${first.cols}`);
    await alice.shot('alice-small.png');
    const back = await resizeTo(alice, VIEW_START);
    expect(back.rows === first.rows && back.cols === first.cols,
      `back at the first viewport: ${back.rows}x${back.cols}, was ${first.rows}x${first.cols}`);
    return `rows x cols: ${first.rows}x${first.cols} -> ${big.rows}x${big.cols} -> ${small.rows}x${small.cols} -> ${back.rows}x${back.cols}`;
  }, { needs: [2] });

  await check(4, async () => {
    await alice.run('clear', { clears: true });
    const who = (await alice.run('whoami')).map((r) => r.trim()).filter(Boolean);
    expect(who.length === 1 && who[0] === 'alice', `whoami printed ${JSON.stringify(who)}`);
    await alice.run('X=kept-42');
    await alice.run('echo secret-e2e > ~/secret.txt');
    const cat = (await alice.run('cat ~/secret.txt')).map((r) => r.trim()).filter(Boolean);
    expect(cat.length === 1 && cat[0] === 'secret-e2e', `cat ~/secret.txt printed ${JSON.stringify(cat)}`);
    const onHost = path.join(tmpDir, 'ws', 'alice', 'secret.txt');
    expect(fs.existsSync(onHost) && fs.readFileSync(onHost, 'utf8') === 'secret-e2e\n',
      `alice's file is not at ${onHost} on the host`);
    await alice.waitForPrompt(5000);
    await sleep(300); // let the last bytes settle on both sides
    aliceScreenBefore = await alice.screen();
    const hashBefore = new URL(alice.page.url()).hash.slice(1);
    const termId = alice.hellos[alice.hellos.length - 1].terminal;
    expect(hashBefore && hashBefore === termId, `URL hash "${hashBefore}" is not the terminal id "${termId}"`);
    await alice.shot('alice-before-reload.png');

    const hellos = alice.hellos.length;
    await alice.page.reload({ waitUntil: 'load' });
    const hello = await alice.waitForHello(hellos + 1);
    expect(hello.terminal === termId, `after reload the page got terminal ${hello.terminal}, not ${termId}`);
    const hashAfter = new URL(alice.page.url()).hash.slice(1);
    expect(hashAfter === termId, `after reload the URL hash is "${hashAfter}", not "${termId}"`);
    // The server's snapshot redraws the screen: every row that was there is back.
    const want = aliceScreenBefore.join('\n').trimEnd();
    let got = '';
    try {
      await alice.waitFor('the screen from before the reload', async () => {
        got = (await alice.screen()).join('\n').trimEnd();
        return got === want;
      }, 10000);
    } catch {
      throw new CheckFailed(`screen after reload differs.\n--- before:\n${want}\n--- after:\n${got}`);
    }
    expect(/^alice$/m.test(got), 'the earlier whoami output is not on the screen after reload');
    await alice.shot('alice-after-reload.png');
    await alice.page.focus('.xterm-helper-textarea');
    const x = (await alice.run('echo "X=$X"')).map((r) => r.trim()).filter(Boolean);
    expect(x.length === 1 && x[0] === 'X=kept-42', `after reload echo $X printed ${JSON.stringify(x)}`);
    await alice.shot('alice-after-reload-x.png');
    return `terminal ${termId} kept: ${aliceScreenBefore.filter((r) => r).length} non-blank rows identical, X=kept-42`;
  }, { needs: [2] });

  await check(5, async () => {
    const onHost = path.join(tmpDir, 'ws', 'alice', 'secret.txt');
    expect(fs.existsSync(onHost), `precondition: alice's ${onHost} does not exist (check 4 did not create it)`);
    const bob = await openTab(browser, 'bob', login.loginUrl);
    const hello = await bob.waitForHello(1);
    expect(hello.user === 'bob', `bob's hello says user ${hello.user}`);
    const cookies = await bob.context.cookies();
    expect(cookies.length === 1 && cookies[0].name === 'warren_session', `bob's context has cookies ${JSON.stringify(cookies.map((c) => c.name))}`);
    await bob.waitForPrompt();
    await bob.page.focus('.xterm-helper-textarea');
    const who = (await bob.run('whoami')).map((r) => r.trim()).filter(Boolean);
    expect(who.length === 1 && who[0] === 'bob', `bob's whoami printed ${JSON.stringify(who)}`);
    const ls = (await bob.run('ls /workspace')).map((r) => r.trim()).filter(Boolean);
    expect(ls.length === 1 && ls[0] === 'bob', `bob's ls /workspace printed ${JSON.stringify(ls)}`);
    const cat = (await bob.run('cat /workspace/alice/secret.txt; echo "rc=$?"')).map((r) => r.trim()).filter(Boolean);
    const rc = cat.length && cat[cat.length - 1].match(/^rc=(\d+)$/);
    expect(rc && rc[1] !== '0', `bob's cat of alice's file did not fail: ${JSON.stringify(cat)}`);
    expect(!cat.some((r) => r.includes('secret-e2e')), `bob read alice's secret: ${JSON.stringify(cat)}`);
    await bob.shot('bob.png');
    // Bob opening a URL with alice's terminal id is told it doesn't exist
    // (close 4404, the same answer as for an id that never existed).
    const aliceTerm = alice && alice.hellos.length ? alice.hellos[0].terminal : null;
    let hijack = 'not tried (no alice terminal id)';
    if (aliceTerm) {
      const page = await bob.context.newPage();
      const probe = new Tab('bob-probe', page);
      await page.goto(`http://127.0.0.1:${login.port}/#${aliceTerm}`, { waitUntil: 'load' });
      await probe.waitFor('the "no longer exists" overlay', async () =>
        page.locator('#overlay:not([hidden]) #overlay-text', { hasText: 'no longer exists' }).count(), 10000);
      expect(probe.hellos.length === 0, `bob got a hello for alice's terminal id: ${JSON.stringify(probe.hellos)}`);
      await probe.shot('bob-alice-terminal.png');
      await page.close();
      hijack = 'alice\'s terminal id refused';
    }
    return `ls /workspace: ${ls.join(' ')}; cat: ${cat[0]}; ${hijack}`;
  }, { needs: [1] });

  await check(6, async () => {
    await alice.page.focus('.xterm-helper-textarea');
    const facts = [];
    for (const name of ['warren-info', 'container-info']) {
      const out = (await alice.run(name)).join('\n');
      expect(!/not found/.test(out), `${name}: ${out}`);
      expect(/alice/.test(out) && /isolation/.test(out), `${name} printed no facts:\n${out}`);
      facts.push(out.split('\n').find((l) => /isolation/.test(l)).trim());
    }
    return facts[0];
  }, { needs: [2] });

  await check(7, async () => {
    const page = alice.page;
    const dt = await page.evaluateHandle(() => {
      const d = new DataTransfer();
      d.items.add(new File(['dropped-e2e\n'], 'dropped e2e.txt', { type: 'text/plain' }));
      return d;
    });
    await page.dispatchEvent('#terminal', 'dragenter', { dataTransfer: dt });
    expect(await page.locator('#drop').isVisible(), 'no drop indicator while dragging');
    await page.dispatchEvent('#terminal', 'drop', { dataTransfer: dt });
    const bar = page.locator('#transfer');
    await alice.waitFor('the upload to finish', async () =>
      (await bar.isVisible()) && /uploaded|failed/.test(await page.locator('#transfer-text').textContent()), 15000);
    const said = await page.locator('#transfer-text').textContent();
    expect(/^uploaded ~\/dropped e2e\.txt$/.test(said), `the page says ${JSON.stringify(said)}`);
    expect(await page.locator('#transfer-bar').evaluate((b) => b.value) === 1, 'the progress bar is not full');
    await alice.shot('alice-dropped.png');
    await page.focus('.xterm-helper-textarea');
    const cat = (await alice.run("cat ~/'dropped e2e.txt'; stat -c %U ~/'dropped e2e.txt'")).map((r) => r.trim()).filter(Boolean);
    expect(cat.length === 2 && cat[0] === 'dropped-e2e' && cat[1] === 'alice', `in the home: ${JSON.stringify(cat)}`);
    return 'dropped e2e.txt: dropped-e2e, owned by alice';
  }, { needs: [2] });

  await check(8, async () => {
    const page = alice.page;
    await page.focus('.xterm-helper-textarea');
    await alice.run('echo download-e2e > ~/out.txt; warren-download ~/out.txt');
    const link = page.locator('#download-link');
    await alice.waitFor('the download link', async () => link.isVisible(), 10000);
    expect((await link.textContent()) === 'Download out.txt', `the link says ${JSON.stringify(await link.textContent())}`);
    await alice.shot('alice-download-link.png');
    const [download] = await Promise.all([page.waitForEvent('download', { timeout: 15000 }), link.click()]);
    const got = fs.readFileSync(await download.path(), 'utf8');
    expect(got === 'download-e2e\n', `the download holds ${JSON.stringify(got)}`);
    expect(download.suggestedFilename() === 'out.txt', `named ${download.suggestedFilename()}`);
    return `out.txt downloaded (${got.length} bytes)`;
  }, { needs: [2] });

  // run.sh starts everything inside a fake internet (tests/fakenet) when it
  // can build one (as root): no packet leaves the machine.
  await check(9, async () => {
    if (process.env.WARREN_E2E_FAKENET !== '1') {
      const why = 'not inside the fake internet (tests/e2e/run.sh builds one as root)';
      expect(!MUST_RUN, why);
      return `SKIP: ${why}`;
    }
    expect(alice !== null, 'alice has no terminal (check 2)');
    await alice.page.focus('.xterm-helper-textarea');
    const up = (await alice.run('curl -sS -m 10 upstream.test')).map((r) => r.trim()).filter(Boolean);
    expect(up.some((r) => r === 'hello from upstream at 93.184.215.14'), `curl to the fake upstream printed ${JSON.stringify(up)}`);
    // Short lines: a wrapped command line would hide run()'s marker.
    const host = (await alice.run('curl -s -m 5 198.51.100.7:8081 || echo refused')).map((r) => r.trim()).filter(Boolean);
    expect(host.length === 1 && host[0] === 'refused', `the host's service was not refused: ${JSON.stringify(host)}`);
    await alice.shot('alice-curl.png');
    return `${up.find((r) => r.startsWith('hello'))}; host service ${host[0]}`;
  }, { needs: [2] });

  await check(10, async () => {
    expect(alice !== null, 'alice has no terminal (check 2)');
    const page = alice.page;
    const made = await page.evaluate(async () => {
      const r = await fetch('/api/me/services', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'e2e-web', argv: ['sh', '-c', 'echo up; sleep 600'] }),
      });
      // Until it runs, so the list below shows it running at once.
      for (let i = 0; r.status === 201 && i < 100; i++) {
        const s = await (await fetch('/api/me/services/e2e-web')).json();
        if (s.state === 'running') break;
        await new Promise((ok) => setTimeout(ok, 100));
      }
      return r.status;
    });
    expect(made === 201, `POST /api/me/services answered ${made}`);
    // The page lists the services after each hello (and every 15 s).
    await page.reload({ waitUntil: 'load' });
    const list = page.locator('#services');
    await alice.waitFor('the services list', async () =>
      (await list.isVisible()) && /e2e-web running/.test(await list.textContent()), 20000);
    await alice.shot('alice-services.png');
    return (await list.textContent()).trim();
  }, { needs: [2] });

  await check(11, async () => {
    await alice.page.focus('.xterm-helper-textarea');
    await alice.run('echo preview-e2e > p.html');
    await alice.run('(python3 -m http.server 8001 >/dev/null 2>&1 &)');
    // The page polls /api/me/ports every 5 s.
    const link = alice.page.locator('#ports a', { hasText: '8001' });
    await alice.waitFor('the port 8001 in the page\'s list', async () => link.count(), 20000);
    const [tab] = await Promise.all([
      alice.context.waitForEvent('page', { timeout: 15000 }),
      link.click(),
    ]);
    await tab.waitForLoadState('load');
    let body = await tab.textContent('body');
    for (let i = 0; i < 20 && !/p\.html/.test(body || ''); i++) {
      await sleep(250); // the app may still be starting: try again
      await tab.reload({ waitUntil: 'load' });
      body = await tab.textContent('body');
    }
    const at = new URL(tab.url());
    expect(at.hostname === '8001-alice.localhost', `the preview opened at ${tab.url()}`);
    expect(/p\.html/.test(body || ''), `the preview shows ${JSON.stringify((body || '').slice(0, 200))}`);
    const file = await tab.goto(`${at.origin}/p.html`, { waitUntil: 'load' });
    expect(file.status() === 200 && (await file.text()).trim() === 'preview-e2e', `p.html answered ${file.status()}`);
    const cookies = await alice.context.cookies(at.origin);
    const pc = cookies.find((c) => c.name === 'warren_preview');
    expect(pc && pc.domain === '8001-alice.localhost' && pc.httpOnly, `preview cookie ${JSON.stringify(pc)}`);
    await tab.close();
    // bob, logged in on the terminal's origin, is refused alice's preview.
    const bob = tabs.find((t) => t.name === 'bob');
    expect(bob, 'bob has no tab (check 5)');
    const page = await bob.context.newPage();
    const host = encodeURIComponent(`8001-alice.localhost:${login.port}`);
    const resp = await page.goto(`http://127.0.0.1:${login.port}/preview/auth?host=${host}&next=%2F`, { waitUntil: 'load' });
    expect(resp.status() === 403, `bob got ${resp.status()} for alice's preview`);
    expect(!/p\.html/.test(await page.textContent('body')), 'bob saw alice\'s app');
    await page.close();
    return `preview at ${at.origin}; bob 403`;
  }, { needs: [2, 5], budgetMs: 60000 });
}

main()
  .then(() => finish())
  .catch((e) => {
    log(`error: ${(e && e.stack) || e}`);
    finish();
  })
  .finally(() => clearTimeout(watchdog));
