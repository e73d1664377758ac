// warren's web terminal: xterm.js + fit, speaking the warren.v1 WebSocket
// protocol (docs/protocol.md).
//
// * The terminal id lives in the URL hash (#<id>): a reload, or the same URL
//   in another tab, attaches to the same terminal; the server redraws the
//   screen from its own copy.
// * A dropped connection is retried with backoff, to the same terminal.
// * When a terminal ends, the page says why and offers a new one.
// * Files or folders dropped onto the page are uploaded into the home
//   (`PUT /api/me/files/...`, with a progress bar); `warren-download FILE`
//   in the terminal prints an OSC 5379 that the page offers as a download
//   link (docs/serve.md, "Files").
// * The user's named services (`GET /api/me/services`) are listed in a
//   corner with their state and restarts (docs/services.md).
(() => {
  'use strict';

  const PROTOCOL = 'warren.v1';
  const PING_EVERY_MS = 20000;
  const PONG_TIMEOUT_MS = 45000;

  const term = new Terminal({
    cursorBlink: true,
    scrollback: 5000,
    fontSize: 14,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
  });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(document.getElementById('terminal'));
  fit.fit();
  term.focus();

  const encoder = new TextEncoder();
  const statusEl = document.getElementById('status');
  const tierEl = document.getElementById('tier');
  const overlayEl = document.getElementById('overlay');
  const overlayText = document.getElementById('overlay-text');
  const overlayButton = document.getElementById('overlay-button');

  let ws = null;
  let terminalId = location.hash.slice(1) || null;
  let retries = 0;
  let ended = false;
  let pingTimer = null;
  let lastPong = 0;
  let statusTimer = null;

  function status(text, hideAfterMs) {
    statusEl.textContent = text;
    statusEl.hidden = false;
    clearTimeout(statusTimer);
    if (hideAfterMs) statusTimer = setTimeout(() => { statusEl.hidden = true; }, hideAfterMs);
  }

  function overlay(text, buttonLabel, onClick) {
    overlayText.textContent = text;
    overlayButton.hidden = !buttonLabel;
    if (buttonLabel) {
      overlayButton.textContent = buttonLabel;
      overlayButton.onclick = () => { overlayEl.hidden = true; onClick(); };
    }
    overlayEl.hidden = false;
    statusEl.hidden = true;
    if (buttonLabel) overlayButton.focus();
  }

  function send(data) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(data);
  }

  function sendResize() {
    send(JSON.stringify({ type: 'resize', cols: term.cols, rows: term.rows }));
  }

  function url() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const path = terminalId ? '/ws/' + encodeURIComponent(terminalId) : '/ws';
    const params = new URLSearchParams({ cols: term.cols, rows: term.rows });
    const user = new URLSearchParams(location.search).get('user');
    if (user) params.set('user', user); // only used by --auth none
    return `${scheme}//${location.host}${path}?${params}`;
  }

  function connect() {
    ended = false;
    status(terminalId ? 'reconnecting…' : 'connecting…');
    ws = new WebSocket(url(), [PROTOCOL]);
    ws.binaryType = 'arraybuffer';
    ws.onmessage = (ev) => {
      if (typeof ev.data === 'string') {
        let msg;
        try { msg = JSON.parse(ev.data); } catch (_) { return; }
        control(msg);
      } else {
        term.write(new Uint8Array(ev.data));
      }
    };
    ws.onclose = closed;
  }

  function control(msg) {
    switch (msg.type) {
      case 'hello':
        retries = 0;
        terminalId = msg.terminal;
        history.replaceState(null, '', location.pathname + location.search + '#' + terminalId);
        document.title = `${msg.user} — warren`;
        term.reset(); // the screen snapshot follows
        showTier(msg);
        status(`${msg.user} · isolation: ${msg.tier} · ${limitsText(msg.limits)}`, 6000);
        if (msg.cols !== term.cols || msg.rows !== term.rows) sendResize();
        startPing();
        refreshServices();
        break;
      case 'exit':
        ended = true;
        showExit(msg);
        break;
      case 'pong':
        lastPong = Date.now();
        break;
      case 'error':
        status('server: ' + msg.message, 6000);
        break;
    }
  }

  // The limits the hello frame reports: enforced ones, then the missing.
  function limitsText(limits) {
    if (!limits) return 'limits unknown';
    const parts = [];
    if (limits.memory_bytes != null) parts.push(`memory ${Math.round(limits.memory_bytes / 1048576)} MiB`);
    if (limits.cpu != null) parts.push(`cpu ${limits.cpu}`);
    if (limits.pids != null) parts.push(`${limits.pids} tasks`);
    let text = parts.length ? parts.join(', ') : 'no limits';
    if (limits.missing && limits.missing.length) text += ` (not enforced: ${limits.missing.join(', ')})`;
    return text;
  }

  function showTier(msg) {
    const limits = msg.limits || {};
    const weak = msg.tier !== 'namespaces' || (limits.missing && limits.missing.length > 0);
    const net = msg.network;
    tierEl.textContent = `isolation: ${msg.tier}` + (net ? ` · network: ${net.mode}` : '');
    let title = `limits: ${limitsText(msg.limits)}`;
    if (net) {
      title += `\nnetwork: ${net.mode}`;
      if (net.allow && net.allow.length) title += `, allow ${net.allow.join(' ')}`;
      if (net.deny && net.deny.length) title += `, deny ${net.deny.join(' ')}`;
      if (net.resolver) title += `, resolver ${net.resolver}`;
    }
    if (limits.per_process && limits.per_process.length) title += `\nper process: ${limits.per_process.join(', ')}`;
    tierEl.title = title;
    tierEl.classList.toggle('weak', weak);
    tierEl.hidden = false;
  }

  function exitText(msg) {
    switch (msg.reason) {
      case 'exit':
        return msg.signal != null
          ? `The shell was killed by signal ${msg.signal}.`
          : `The shell exited with status ${msg.code}.`;
      case 'idle_timeout':
        return 'The terminal was closed after being idle for too long.';
      case 'memory_limit':
        return 'The shell was killed: the sandbox reached its memory limit.';
      case 'server_shutdown':
        return 'The server shut down.';
      default:
        return 'The terminal was closed by the server.';
    }
  }

  function showExit(msg) {
    stopPing();
    overlay(exitText(msg), 'Open a new terminal', newTerminal);
  }

  function newTerminal() {
    terminalId = null;
    history.replaceState(null, '', location.pathname + location.search);
    term.reset();
    connect();
    term.focus();
  }

  function closed(ev) {
    // A socket we already replaced (hash change): its late close event
    // must not touch the new connection.
    if (ev.target !== ws) return;
    stopPing();
    ws = null;
    if (ended) return; // the exit message is already shown
    const reason = ev.reason || '';
    switch (ev.code) {
      case 4401: {
        const detail = reason.replace(/^not logged in:? ?/, '');
        overlay('Not logged in' + (detail ? ` (${detail})` : '')
          + '. Open the login URL that `warren serve` printed.', 'Retry', connect);
        return;
      }
      case 4403:
        overlay('Refused: ' + (reason || 'forbidden') + '.', 'Retry', connect);
        return;
      case 4404:
        overlay('That terminal no longer exists.', 'Open a new terminal', newTerminal);
        return;
      case 4429:
        overlay(reason || 'The server is full.', 'Try again', connect);
        return;
      case 4400:
      case 4500:
        overlay('Error: ' + (reason || 'internal error') + '.', 'Try again', connect);
        return;
    }
    // Dropped (network, server restart): try again, to the same terminal.
    const delay = Math.min(10000, 500 * 2 ** retries++);
    status(`connection lost; retrying in ${Math.ceil(delay / 1000)} s…`);
    setTimeout(connect, delay);
  }

  function startPing() {
    stopPing();
    lastPong = Date.now();
    pingTimer = setInterval(() => {
      if (Date.now() - lastPong > PONG_TIMEOUT_MS) {
        if (ws) ws.close(); // dead connection: closed() reconnects
        return;
      }
      send(JSON.stringify({ type: 'ping' }));
    }, PING_EVERY_MS);
  }

  function stopPing() {
    clearInterval(pingTimer);
    pingTimer = null;
  }

  // Input: keys and paste as binary frames.
  term.onData((data) => send(encoder.encode(data)));
  term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0))));

  // Size: fit to the window, tell the server.
  let fitTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(fitTimer);
    fitTimer = setTimeout(() => fit.fit(), 50);
  });
  term.onResize(() => sendResize());

  // Copy and paste: Ctrl+Shift+C copies the selection, Ctrl+Shift+V pastes
  // (the browser's paste event, which xterm.js handles). Plain Ctrl+C stays
  // an interrupt for the shell.
  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).catch(() => {});
      return;
    }
    const ta = document.createElement('textarea');
    ta.value = text;
    document.body.appendChild(ta);
    ta.select();
    try { document.execCommand('copy'); } catch (_) { /* nothing to do */ }
    ta.remove();
    term.focus();
  }
  term.attachCustomKeyEventHandler((e) => {
    if (e.type === 'keydown' && e.ctrlKey && e.shiftKey) {
      if (e.code === 'KeyC') {
        const selection = term.getSelection();
        if (selection) copy(selection);
        e.preventDefault();
        return false;
      }
      if (e.code === 'KeyV') return false; // let the browser paste
    }
    return true;
  });

  // ------------------------------------------------------------- files

  const dropEl = document.getElementById('drop');
  const transferEl = document.getElementById('transfer');
  const transferText = document.getElementById('transfer-text');
  const transferBar = document.getElementById('transfer-bar');
  const downloadEl = document.getElementById('download');
  const downloadLink = document.getElementById('download-link');
  let uploading = false;

  // The user's services, by name: state and restarts; hidden when there
  // are none (or the server has no management API).
  const servicesEl = document.getElementById('services');
  const SERVICES_EVERY_MS = 15000;
  let servicesTimer = null;
  async function refreshServices() {
    clearTimeout(servicesTimer);
    servicesTimer = setTimeout(refreshServices, SERVICES_EVERY_MS);
    const user = new URLSearchParams(location.search).get('user');
    const q = user ? '?' + new URLSearchParams({ user }).toString() : '';
    let list = [];
    try {
      const res = await fetch('/api/me/services' + q, { credentials: 'same-origin' });
      if (res.ok) list = (await res.json()).services || [];
    } catch (_) { /* shown again at the next refresh */ }
    servicesEl.replaceChildren();
    servicesEl.hidden = list.length === 0;
    if (list.length === 0) return;
    servicesEl.append('services: ');
    list.forEach((s, i) => {
      if (i > 0) servicesEl.append(' · ');
      const item = document.createElement('span');
      item.className = s.state;
      item.textContent = `${s.name} ${s.state}` + (s.restarts ? ` ↻${s.restarts}` : '');
      item.title = s.argv.join(' ');
      servicesEl.append(item);
    });
  }

  // `/api/me/files/<path>` (path already percent-encoded per name).
  function filesUrl(encodedPath) {
    const params = new URLSearchParams();
    const user = new URLSearchParams(location.search).get('user');
    if (user) params.set('user', user); // only used by --auth none
    const q = params.toString();
    return '/api/me/files/' + encodedPath + (q ? '?' + q : '');
  }
  const encodePath = (p) => p.split('/').map(encodeURIComponent).join('/');

  // Every file under a dropped entry, as [path, File] (folders walked).
  async function filesOf(entry, prefix) {
    if (entry.isFile) {
      const file = await new Promise((ok, fail) => entry.file(ok, fail));
      return [[prefix + entry.name, file]];
    }
    const reader = entry.createReader();
    const out = [];
    for (;;) {
      const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
      if (!batch.length) break;
      for (const e of batch) out.push(...await filesOf(e, prefix + entry.name + '/'));
    }
    return out;
  }

  async function dropped(dt) {
    const items = Array.from(dt.items || []).filter((i) => i.kind === 'file');
    const files = [];
    for (const item of items) {
      const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
      if (entry) files.push(...await filesOf(entry, ''));
      else if (item.getAsFile()) files.push([item.getAsFile().name, item.getAsFile()]);
    }
    return files;
  }

  function uploadOne(path, file, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('PUT', filesUrl(encodePath(path)));
      xhr.setRequestHeader('Content-Type', 'application/octet-stream');
      xhr.upload.onprogress = (e) => onProgress(e.loaded);
      xhr.onload = () => {
        if (xhr.status === 201) return resolve();
        let why = `HTTP ${xhr.status}`;
        try { why = JSON.parse(xhr.responseText).error || why; } catch (_) { /* not JSON */ }
        reject(new Error(why));
      };
      xhr.onerror = () => reject(new Error('connection failed'));
      xhr.send(file);
    });
  }

  async function upload(files) {
    if (uploading || !files.length) return;
    uploading = true;
    const total = files.reduce((n, [, f]) => n + f.size, 0) || 1;
    let done = 0;
    transferBar.value = 0;
    transferEl.hidden = false;
    try {
      for (const [path, file] of files) {
        transferText.textContent = `uploading ${path}…`;
        await uploadOne(path, file, (loaded) => { transferBar.value = (done + loaded) / total; });
        done += file.size;
        transferBar.value = done / total;
      }
      transferText.textContent = files.length === 1
        ? `uploaded ~/${files[0][0]}`
        : `uploaded ${files.length} files into ~/`;
      setTimeout(() => { if (!uploading) transferEl.hidden = true; }, 6000);
    } catch (e) {
      transferText.textContent = `upload failed: ${e.message}`;
    } finally {
      uploading = false;
      term.focus();
    }
  }

  let dragDepth = 0;
  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes('Files');
  window.addEventListener('dragenter', (e) => {
    if (!hasFiles(e)) return;
    dragDepth++;
    dropEl.hidden = false;
  });
  window.addEventListener('dragleave', () => {
    if (--dragDepth <= 0) { dragDepth = 0; dropEl.hidden = true; }
  });
  window.addEventListener('dragover', (e) => { if (hasFiles(e)) e.preventDefault(); });
  window.addEventListener('drop', (e) => {
    e.preventDefault();
    dragDepth = 0;
    dropEl.hidden = true;
    dropped(e.dataTransfer).then(upload, (err) => {
      transferEl.hidden = false;
      transferText.textContent = `upload failed: ${err.message}`;
    });
  });

  // `warren-download FILE`: ESC ] 5379 ; download ; <path, percent-encoded> BEL.
  // Offered as a link, never fetched by itself: any program's output can
  // carry the sequence.
  term.parser.registerOscHandler(5379, (data) => {
    const i = data.indexOf(';');
    const kind = data.slice(0, i);
    const path = data.slice(i + 1);
    if (kind !== 'download' || !/^[A-Za-z0-9._~%/-]+$/.test(path)) return true;
    let name = path.split('/').pop();
    try { name = decodeURIComponent(name); } catch (_) { /* keep it encoded */ }
    downloadLink.href = filesUrl(path);
    downloadLink.textContent = `Download ${name}`;
    downloadEl.hidden = false;
    return true;
  });
  downloadLink.addEventListener('click', () => { setTimeout(() => { downloadEl.hidden = true; }, 0); });
  document.getElementById('download-close').addEventListener('click', () => {
    downloadEl.hidden = true;
    term.focus();
  });

  window.addEventListener('hashchange', () => {
    const id = location.hash.slice(1) || null;
    if (id !== terminalId) {
      terminalId = id;
      if (ws) { const old = ws; ws = null; old.onmessage = null; stopPing(); old.close(); }
      term.reset();
      connect();
    }
  });

  // Open ports in the sandbox, each a link to its preview
  // (docs/previews.md): through /preview/auth on this origin, which sends
  // the owner on to the preview host with a one-time grant.
  const portsEl = document.getElementById('ports');
  const portsList = document.getElementById('ports-list');
  let portsShown = '';
  async function refreshPorts() {
    if (document.hidden) return;
    let open = [];
    try {
      const user = new URLSearchParams(location.search).get('user');
      const res = await fetch('/api/me/ports' + (user ? '?user=' + encodeURIComponent(user) : ''));
      if (res.ok) open = (await res.json()).ports || [];
    } catch (_) { /* the server is away: keep the list as it was */ return; }
    const key = open.map((p) => p.host).join(' ');
    if (key === portsShown) return;
    portsShown = key;
    portsList.replaceChildren(...open.map((p) => {
      const a = document.createElement('a');
      a.href = '/preview/auth?host=' + encodeURIComponent(p.host) + '&next=%2F';
      a.target = '_blank';
      a.rel = 'noopener';
      a.textContent = String(p.port);
      a.title = p.url;
      return a;
    }));
    portsEl.hidden = open.length === 0;
  }
  setInterval(refreshPorts, 5000);
  document.addEventListener('visibilitychange', refreshPorts);

  connect();
  refreshPorts();
})();
