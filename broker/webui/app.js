// The oslogo broker's web UI: plain JavaScript over the management API
// (docs/MANAGEMENT.md). No third-party code and no request to another
// origin. Credentials live in sessionStorage and go out as an HTTP basic
// Authorization header, as in RabbitMQ's management UI.
'use strict';
(function () {
  const store = window.sessionStorage;
  let auth = store.getItem('oslogo.auth');
  let refreshMs = Number(store.getItem('oslogo.refresh') || 5000);
  let timer = null;
  let gen = 0; // bumped on every route change: stale updates are dropped
  let current = null;
  let whoami = null;

  // ---------- helpers ----------

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === undefined || kid === null || kid === false) continue;
      e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return e;
  }
  const $ = (sel) => document.querySelector(sel);
  const enc = encodeURIComponent;

  function fmtNum(n) {
    if (n === undefined || n === null) return '';
    return Number(n).toLocaleString('en-US');
  }
  function fmtBytes(n) {
    if (n === undefined || n === null) return '';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    let v = Number(n);
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + ' ' + units[i];
  }
  function fmtRate(n) {
    if (!n) return '0/s';
    return (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2)) + '/s';
  }
  function fmtAge(ms) {
    if (!ms) return '';
    const s = ms / 1000;
    if (s < 60) return s.toFixed(1) + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + Math.floor(s % 60) + ' s';
    return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
  }
  function fmtTime(ms) {
    return ms ? new Date(ms).toLocaleString('en-GB') : '';
  }
  function badge(text, kind) { return el('span', { class: 'badge ' + (kind || '') }, text); }
  function vhostName(v) { return v; }

  function basic(user, pass) {
    const bytes = new TextEncoder().encode(user + ':' + pass);
    let bin = '';
    for (const b of bytes) bin += String.fromCharCode(b);
    return 'Basic ' + btoa(bin);
  }

  // api sends one request; it resolves to {status, data} and only rejects
  // on a network error. A 401 "Login failed" ends the session.
  async function api(method, path, body) {
    const opts = { method, headers: { Authorization: auth || '', 'X-Requested-With': 'XMLHttpRequest' }, cache: 'no-store' };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(path, opts);
    let data = null;
    const text = await r.text();
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = text; }
    }
    if (r.status === 401 && data && data.reason === 'Login failed' && path !== '/api/whoami') {
      logout('Your session ended: log in again.');
    }
    return { status: r.status, data };
  }
  async function getOK(path) {
    const r = await api('GET', path);
    if (r.status !== 200) {
      throw new Error('GET ' + path + ': ' + r.status + ' ' + (r.data && r.data.reason ? r.data.reason : ''));
    }
    return r.data;
  }
  function reasonOf(r) {
    if (r.data && r.data.reason) return r.status + ' ' + r.data.reason;
    return String(r.status);
  }

  // table builds a table; cols are {h, f(row) -> text or node, num, key}.
  function table(cols, rows, rowAttrs) {
    const head = el('tr', {}, cols.map((c) => el('th', { class: c.num ? 'num' : '' }, c.h)));
    const body = rows.map((row) => el('tr', rowAttrs ? rowAttrs(row) : {}, cols.map((c) => {
      const v = c.f(row);
      return el('td', { class: [c.num ? 'num' : '', c.key || ''].join(' ').trim() || null }, v);
    })));
    if (rows.length === 0) {
      body.push(el('tr', {}, el('td', { colspan: String(cols.length), class: 'muted' }, 'none')));
    }
    return el('table', {}, el('thead', {}, head), el('tbody', {}, body));
  }

  function setStatus(msg) { $('#status').textContent = msg || ''; }

  // ---------- charts ----------

  const hist = { t: [], ready: [], unacked: [], inRate: [], outRate: [], recvRate: [], sendRate: [] };
  let lastCounters = null;
  const histMax = 90;

  function pushHist(o, c) {
    const now = Date.now();
    hist.t.push(now);
    hist.ready.push(o.queue_totals.messages_ready);
    hist.unacked.push(o.queue_totals.messages_unacknowledged);
    let rin = 0, rout = 0, rrecv = 0, rsend = 0;
    if (c && lastCounters) {
      const dt = (c.now - lastCounters.now) / 1000;
      if (dt > 0) {
        // Sums over live queues and connections drop when one goes away:
        // a negative difference is shown as 0.
        rin = Math.max(0, c.messages_in - lastCounters.messages_in) / dt;
        rout = Math.max(0, c.messages_out - lastCounters.messages_out) / dt;
        rrecv = Math.max(0, c.recv_oct - lastCounters.recv_oct) / dt;
        rsend = Math.max(0, c.send_oct - lastCounters.send_oct) / dt;
      }
    }
    if (c) lastCounters = c;
    hist.inRate.push(rin);
    hist.outRate.push(rout);
    hist.recvRate.push(rrecv);
    hist.sendRate.push(rsend);
    for (const k of Object.keys(hist)) {
      if (hist[k].length > histMax) hist[k].shift();
    }
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) {
      if (v <= m * p) return m * p;
    }
    return 10 * p;
  }

  // drawChart draws series ({label, color, values}) against hist.t.
  function drawChart(canvas, series, fmt) {
    const dpr = window.devicePixelRatio || 1;
    const W = 440, H = 170;
    canvas.width = W * dpr;
    canvas.height = H * dpr;
    canvas.style.width = W + 'px';
    canvas.style.height = H + 'px';
    const g = canvas.getContext('2d');
    g.scale(dpr, dpr);
    g.clearRect(0, 0, W, H);
    const left = 64, right = 8, top = 8, bottom = 22;
    const pw = W - left - right, ph = H - top - bottom;
    let max = 0;
    for (const s of series) for (const v of s.values) max = Math.max(max, v);
    max = niceMax(max);
    g.font = '11px sans-serif';
    g.fillStyle = '#666';
    g.strokeStyle = '#e3e3e3';
    g.lineWidth = 1;
    g.textAlign = 'right';
    g.textBaseline = 'middle';
    for (let i = 0; i <= 4; i++) {
      const y = top + ph - (ph * i) / 4;
      g.beginPath();
      g.moveTo(left, Math.round(y) + 0.5);
      g.lineTo(left + pw, Math.round(y) + 0.5);
      g.stroke();
      g.fillText(fmt((max * i) / 4), left - 6, y);
    }
    const t = hist.t;
    const span = 180000; // three minutes across
    const tEnd = t.length ? t[t.length - 1] : Date.now();
    const x = (ts) => left + pw - ((tEnd - ts) / span) * pw;
    g.textAlign = 'center';
    g.textBaseline = 'top';
    for (const ago of [180, 120, 60, 0]) {
      g.fillText(ago === 0 ? 'now' : '-' + ago / 60 + ' min', Math.min(left + pw - 12, Math.max(left + 20, x(tEnd - ago * 1000))), top + ph + 5);
    }
    g.save();
    g.beginPath();
    g.rect(left, top, pw, ph);
    g.clip();
    for (const s of series) {
      g.strokeStyle = s.color;
      g.lineWidth = 2;
      g.beginPath();
      s.values.forEach((v, i) => {
        const px = x(t[i]), py = top + ph - (v / max) * ph;
        if (i === 0) g.moveTo(px, py); else g.lineTo(px, py);
      });
      g.stroke();
    }
    g.restore();
  }

  function chartBox(id, title, series, fmt) {
    const c = el('canvas', { id });
    const legend = el('div', { class: 'legend' }, series.map((s) => {
      const last = s.values.length ? s.values[s.values.length - 1] : 0;
      const i = el('i');
      i.style.background = s.color;
      return el('span', {}, i, s.label + ': ' + fmt(last));
    }));
    const box = el('div', { class: 'chart' }, el('h3', {}, title), c, legend);
    drawChart(c, series, fmt);
    return box;
  }

  // ---------- pages ----------

  const pages = {};

  pages.overview = function (root) {
    root.append(el('h1', {}, 'Overview'));
    const cards = el('div', { class: 'cards', id: 'totals' });
    const charts = el('div', { class: 'charts', id: 'charts' });
    const node = el('div', { id: 'node' });
    const listeners = el('div', { id: 'listeners' });
    root.append(cards, el('h2', {}, 'Charts'), charts, el('h2', {}, 'Node'), node, el('h2', {}, 'Listeners'), listeners);
    return async function update(isCurrent) {
      const [o, counters, nodes, alarms] = await Promise.all([
        getOK('/api/overview'),
        api('GET', '/api/counters'),
        api('GET', '/api/nodes'),
        api('GET', '/api/health/checks/alarms'),
      ]);
      if (!isCurrent()) return;
      $('#footer-info').textContent = (o.product_name || 'oslogo') + ' ' + (o.product_version || '') + ' · node ' + o.node +
        ' · management API ' + o.management_version + ' ·';
      pushHist(o, counters.status === 200 ? counters.data : null);
      const ot = o.object_totals, qt = o.queue_totals;
      const card = (k, v, id) => el('div', { class: 'card', id }, el('div', { class: 'v' }, v), el('div', { class: 'k' }, k));
      cards.replaceChildren(
        card('Connections', fmtNum(ot.connections), 'total-connections'),
        card('Channels', fmtNum(ot.channels), 'total-channels'),
        card('Exchanges', fmtNum(ot.exchanges), 'total-exchanges'),
        card('Queues', fmtNum(ot.queues), 'total-queues'),
        card('Consumers', fmtNum(ot.consumers), 'total-consumers'),
        card('Messages ready', fmtNum(qt.messages_ready), 'total-ready'),
        card('Unacknowledged', fmtNum(qt.messages_unacknowledged), 'total-unacked'),
        card('Messages total', fmtNum(qt.messages), 'total-messages'));
      charts.replaceChildren(
        chartBox('chart-queued', 'Queued messages', [
          { label: 'Ready', color: '#e8a317', values: hist.ready },
          { label: 'Unacknowledged', color: '#4a7fd4', values: hist.unacked }], fmtNum),
        chartBox('chart-rates', 'Message rates', [
          { label: 'Into queues', color: '#c0282d', values: hist.inRate },
          { label: 'Delivered', color: '#2a7d2a', values: hist.outRate }], fmtRate),
        chartBox('chart-data', 'Data rates', [
          { label: 'Received', color: '#7a3fb0', values: hist.recvRate },
          { label: 'Sent', color: '#18a0a0', values: hist.sendRate }], (v) => fmtBytes(v) + '/s'));
      const alarm = alarms.status === 503;
      const items = [['Alarms', alarm ? badge('memory alarm', 'bad') : badge('none', 'ok')]];
      if (nodes.status === 200 && nodes.data.length) {
        const n = nodes.data[0];
        items.push(['Name', n.name], ['Memory used (Go runtime)', fmtBytes(n.mem_used)],
          ['Memory high watermark (queued bodies)', n.mem_limit ? fmtBytes(n.mem_limit) : 'none'],
          ['Uptime', fmtAge(n.uptime)], ['Processors', String(n.processors)], ['OS pid', n.os_pid]);
      } else {
        items.push(['Node', el('span', { class: 'muted' }, 'node details need the monitoring tag')]);
      }
      node.replaceChildren(el('dl', { class: 'props' }, items.map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)])));
      listeners.replaceChildren(table([
        { h: 'Protocol', f: (l) => l.protocol },
        { h: 'Bound to', f: (l) => l.ip_address },
        { h: 'Port', f: (l) => String(l.port), num: true }], o.listeners));
    };
  };

  pages.connections = function (root) {
    root.append(el('h1', {}, 'Connections'));
    const box = el('div', { id: 'connections' });
    root.append(box);
    return async function update(isCurrent) {
      const list = await getOK('/api/connections');
      if (!isCurrent()) return;
      box.replaceChildren(table([
        { h: 'Name', f: (c) => el('span', {}, c.user_provided_name ? el('div', {}, c.user_provided_name) : null, el('div', { class: 'muted' }, c.name)) },
        { h: 'User', f: (c) => c.user },
        { h: 'Virtual host', f: (c) => vhostName(c.vhost) },
        { h: 'State', f: (c) => badge(c.state, c.state === 'running' ? 'ok' : 'warn') },
        { h: 'TLS', f: (c) => c.ssl ? 'yes' : '' },
        { h: 'Client', f: (c) => [c.client_properties.product, c.client_properties.version].filter(Boolean).join(' ') },
        { h: 'Channels', f: (c) => fmtNum(c.channels), num: true },
        { h: 'From client', f: (c) => fmtBytes(c.recv_oct), num: true },
        { h: 'To client', f: (c) => fmtBytes(c.send_oct), num: true },
        { h: 'Connected', f: (c) => fmtTime(c.connected_at) },
        { h: '', f: (c) => confirmButton('Close', 'Really close?', async () => {
          const r = await api('DELETE', '/api/connections/' + enc(c.name));
          setStatus(r.status === 204 ? '' : 'close: ' + reasonOf(r));
          refreshNow();
        }) }], list, (c) => ({ 'data-connection': c.name })));
    };
  };

  pages.channels = function (root) {
    root.append(el('h1', {}, 'Channels'));
    const box = el('div', { id: 'channels' });
    root.append(box);
    return async function update(isCurrent) {
      const list = await getOK('/api/channels');
      if (!isCurrent()) return;
      box.replaceChildren(table([
        { h: 'Channel', f: (c) => c.name },
        { h: 'User', f: (c) => c.user },
        { h: 'Virtual host', f: (c) => c.vhost },
        { h: 'Mode', f: (c) => [c.confirm ? 'confirm' : '', c.transactional ? 'tx' : ''].filter(Boolean).join(', ') },
        { h: 'State', f: (c) => badge(c.state, c.state === 'running' ? 'ok' : 'warn') },
        { h: 'Consumers', f: (c) => fmtNum(c.consumer_count), num: true },
        { h: 'Prefetch', f: (c) => fmtNum(c.prefetch_count), num: true },
        { h: 'Unacked', f: (c) => fmtNum(c.messages_unacknowledged), num: true },
        { h: 'Unconfirmed', f: (c) => fmtNum(c.messages_unconfirmed), num: true }], list));
    };
  };

  function features(x) {
    return [x.durable ? 'D' : '', x.auto_delete ? 'AD' : '', x.exclusive ? 'Excl' : '', x.internal ? 'I' : '',
      x.arguments && Object.keys(x.arguments).length ? 'Args' : ''].filter(Boolean).join(' ');
  }

  pages.exchanges = function (root) {
    root.append(el('h1', {}, 'Exchanges'));
    const box = el('div', { id: 'exchanges' });
    root.append(box);
    return async function update(isCurrent) {
      const list = await getOK('/api/exchanges');
      if (!isCurrent()) return;
      box.replaceChildren(table([
        { h: 'Virtual host', f: (x) => x.vhost },
        { h: 'Name', f: (x) => x.name === '' ? '(AMQP default)' : x.name },
        { h: 'Type', f: (x) => x.type },
        { h: 'Features', f: (x) => features(x), key: 'features' },
        { h: 'Arguments', f: (x) => Object.keys(x.arguments || {}).length ? JSON.stringify(x.arguments) : '' }], list,
      (x) => ({ 'data-exchange': x.vhost + '|' + x.name })));
    };
  };

  function queueLink(vhost, name) {
    return el('a', { href: '#/queues/' + enc(vhost) + '/' + enc(name) }, name);
  }

  pages.queues = function (root) {
    root.append(el('h1', {}, 'Queues'));
    const box = el('div', { id: 'queues' });
    const vhSel = el('select', { name: 'vhost' });
    const form = el('form', { class: 'inline', id: 'add-queue' },
      el('label', {}, 'Virtual host', vhSel),
      el('label', {}, 'Name', el('input', { name: 'name', required: true })),
      el('label', {}, 'Durable', el('select', { name: 'durable' }, el('option', { value: 'true' }, 'yes'), el('option', { value: 'false' }, 'no'))),
      el('button', { type: 'submit' }, 'Add queue'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const f = new FormData(form);
      const r = await api('PUT', '/api/queues/' + enc(f.get('vhost')) + '/' + enc(f.get('name')),
        { durable: f.get('durable') === 'true', auto_delete: false, arguments: {} });
      setStatus(r.status < 300 ? '' : 'add queue: ' + reasonOf(r));
      refreshNow();
    });
    root.append(box, el('h2', {}, 'Add a queue'), form);
    fillVHosts(vhSel);
    return async function update(isCurrent) {
      const list = await getOK('/api/queues');
      if (!isCurrent()) return;
      box.replaceChildren(table([
        { h: 'Virtual host', f: (q) => q.vhost },
        { h: 'Name', f: (q) => queueLink(q.vhost, q.name), key: 'name' },
        { h: 'Type', f: (q) => q.type },
        { h: 'Features', f: (q) => features(q) },
        { h: 'State', f: (q) => q.state },
        { h: 'Ready', f: (q) => fmtNum(q.messages_ready), num: true, key: 'ready' },
        { h: 'Unacked', f: (q) => fmtNum(q.messages_unacknowledged), num: true, key: 'unacked' },
        { h: 'Total', f: (q) => fmtNum(q.messages), num: true, key: 'messages' },
        { h: 'Consumers', f: (q) => fmtNum(q.consumers), num: true, key: 'consumers' },
        { h: 'Memory', f: (q) => fmtBytes(q.memory), num: true }], list,
      (q) => ({ 'data-queue': q.vhost + '|' + q.name })));
    };
  };

  async function fillVHosts(sel) {
    const r = await api('GET', '/api/vhosts');
    if (r.status !== 200) return;
    sel.replaceChildren(...r.data.map((v) => el('option', { value: v.name }, v.name)));
  }

  // confirmButton asks for a second click before acting.
  function confirmButton(label, confirmLabel, act, id) {
    const b = el('button', { type: 'button', class: 'danger', id }, label);
    let armed = false;
    b.addEventListener('click', async () => {
      if (!armed) {
        armed = true;
        b.textContent = confirmLabel;
        setTimeout(() => { armed = false; b.textContent = label; }, 4000);
        return;
      }
      b.disabled = true;
      await act();
    });
    return b;
  }

  pages.queue = function (root, args) {
    const [vhost, name] = args;
    const qpath = '/api/queues/' + enc(vhost) + '/' + enc(name);
    root.append(el('h1', {}, 'Queue ', el('span', { id: 'queue-name' }, name), el('span', { class: 'muted' }, ' in virtual host ' + vhost)));
    const props = el('div', { id: 'queue-props' });
    const consumers = el('div', { id: 'queue-consumers' });
    const bindings = el('div', { id: 'queue-bindings' });
    const result = el('div', { id: 'get-result', class: 'result' });
    const getForm = el('form', { class: 'inline', id: 'get-form' },
      el('label', {}, 'Ack mode', el('select', { name: 'ackmode' },
        el('option', { value: 'ack_requeue_true' }, 'Nack message, requeue true'),
        el('option', { value: 'ack_requeue_false' }, 'Ack message, requeue false'),
        el('option', { value: 'reject_requeue_true' }, 'Reject, requeue true'),
        el('option', { value: 'reject_requeue_false' }, 'Reject, requeue false'))),
      el('label', {}, 'Encoding', el('select', { name: 'encoding' },
        el('option', { value: 'auto' }, 'Automatic string/base64'), el('option', { value: 'base64' }, 'base64'))),
      el('label', {}, 'Messages', el('input', { name: 'count', type: 'number', value: '1', min: '1', max: '500' })),
      el('button', { type: 'submit', id: 'get-submit' }, 'Get messages'));
    getForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const f = new FormData(getForm);
      const r = await api('POST', qpath + '/get', { count: Number(f.get('count')), ackmode: f.get('ackmode'), encoding: f.get('encoding'), truncate: 50000 });
      if (r.status !== 200) {
        result.replaceChildren(el('p', { class: 'error' }, 'get: ' + reasonOf(r)));
        return;
      }
      result.replaceChildren(r.data.length === 0 ? el('p', { class: 'muted' }, 'Queue is empty.') : '',
        ...r.data.map((m, i) => el('div', { class: 'message' },
          el('h3', {}, 'Message ' + (i + 1)),
          el('dl', { class: 'props' },
            el('dt', {}, 'Exchange'), el('dd', {}, m.exchange === '' ? '(AMQP default)' : m.exchange),
            el('dt', {}, 'Routing key'), el('dd', {}, m.routing_key),
            el('dt', {}, 'Redelivered'), el('dd', {}, String(m.redelivered)),
            el('dt', {}, 'Properties'), el('dd', {}, JSON.stringify(m.properties)),
            el('dt', {}, 'Payload'), el('dd', {}, el('pre', {}, m.payload), el('span', { class: 'muted' }, m.payload_bytes + ' bytes, encoding ' + m.payload_encoding))))));
      refreshNow();
    });
    const pubForm = el('form', { class: 'inline', id: 'publish-form' },
      el('label', {}, 'Delivery mode', el('select', { name: 'delivery_mode' },
        el('option', { value: '1' }, '1 - non-persistent'), el('option', { value: '2' }, '2 - persistent'))),
      el('label', {}, 'Content type', el('input', { name: 'content_type', value: 'application/json' })),
      el('label', {}, 'Payload', el('textarea', { name: 'payload', rows: '3', cols: '50' })),
      el('button', { type: 'submit', id: 'publish-submit' }, 'Publish message'),
      el('span', { id: 'publish-result' }));
    pubForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const f = new FormData(pubForm);
      const properties = { delivery_mode: Number(f.get('delivery_mode')) };
      if (f.get('content_type')) properties.content_type = f.get('content_type');
      const r = await api('POST', '/api/exchanges/' + enc(vhost) + '/amq.default/publish',
        { properties, routing_key: name, payload: f.get('payload'), payload_encoding: 'string' });
      $('#publish-result').textContent = r.status === 200 ? (r.data.routed ? 'Message published.' : 'Message published, but not routed.') : 'publish: ' + reasonOf(r);
      refreshNow();
    });
    const purge = el('button', { type: 'button', id: 'purge', class: 'danger' }, 'Purge messages');
    purge.addEventListener('click', async () => {
      const r = await api('DELETE', qpath + '/contents');
      $('#purge-result').textContent = r.status === 204 ? 'Queue purged.' : 'purge: ' + reasonOf(r);
      refreshNow();
    });
    const del = confirmButton('Delete queue', 'Really delete?', async () => {
      const r = await api('DELETE', qpath);
      if (r.status === 204) location.hash = '#/queues';
      else setStatus('delete: ' + reasonOf(r));
    }, 'delete-queue');
    root.append(props, el('h2', {}, 'Consumers'), consumers, el('h2', {}, 'Bindings'), bindings,
      el('h2', {}, 'Get messages'), getForm, result,
      el('h2', {}, 'Publish message'), pubForm,
      el('h2', {}, 'Purge'), el('div', {}, purge, ' ', el('span', { id: 'purge-result' })),
      el('h2', {}, 'Delete'), del);
    return async function update(isCurrent) {
      const [q, b] = await Promise.all([api('GET', qpath), api('GET', qpath + '/bindings')]);
      if (!isCurrent()) return;
      if (q.status === 404) {
        props.replaceChildren(el('p', { class: 'error' }, 'This queue does not exist.'));
        return;
      }
      if (q.status !== 200) throw new Error('GET ' + qpath + ': ' + reasonOf(q));
      const d = q.data;
      const kv = [['Messages ready', el('span', { id: 'q-ready' }, fmtNum(d.messages_ready))],
        ['Unacknowledged', el('span', { id: 'q-unacked' }, fmtNum(d.messages_unacknowledged))],
        ['Total', el('span', { id: 'q-messages' }, fmtNum(d.messages))],
        ['Ready bytes', fmtBytes(d.message_bytes_ready)], ['Memory', fmtBytes(d.memory)],
        ['Consumers', fmtNum(d.consumers)], ['Type', d.type], ['State', d.state], ['Features', features(d)],
        ['Arguments', JSON.stringify(d.arguments)]];
      if (d.owner_pid_details) kv.push(['Exclusive owner', d.owner_pid_details.name]);
      props.replaceChildren(el('dl', { class: 'props' }, kv.map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)])));
      consumers.replaceChildren(table([
        { h: 'Channel', f: (c) => c.channel_details.name },
        { h: 'Consumer tag', f: (c) => c.consumer_tag },
        { h: 'Ack required', f: (c) => c.ack_required ? 'yes' : 'no' },
        { h: 'Exclusive', f: (c) => c.exclusive ? 'yes' : 'no' },
        { h: 'Prefetch', f: (c) => fmtNum(c.prefetch_count), num: true },
        { h: 'Active', f: (c) => c.activity_status }], d.consumer_details || []));
      bindings.replaceChildren(table([
        { h: 'From', f: (x) => x.source === '' ? '(AMQP default)' : x.source },
        { h: 'Routing key', f: (x) => x.routing_key },
        { h: 'Arguments', f: (x) => Object.keys(x.arguments || {}).length ? JSON.stringify(x.arguments) : '' }],
      b.status === 200 ? b.data : []));
    };
  };

  function connText(c) {
    const n = c.connection_name || c.name;
    return el('div', { class: 'conn', title: c.name + ' (' + c.user + ')' }, n, el('span', { class: 'muted' }, ' ' + c.peer_host + ':' + c.peer_port));
  }

  pages.oslo = function (root) {
    root.append(el('h1', {}, 'Oslo view'), el('p', { class: 'muted' },
      'Queues, bindings and consumers read as oslo.messaging lays them out: RPC topics with their servers, reply queues with their callers, notification topics with their listeners and pools.'));
    const problems = el('div', { id: 'oslo-problems' });
    const topics = el('div', { id: 'oslo-topics' });
    const replies = el('div', { id: 'oslo-replies' });
    const notifs = el('div', { id: 'oslo-notifications' });
    root.append(el('h2', {}, 'Problems'), problems, el('h2', {}, 'RPC topics'), topics,
      el('h2', {}, 'Reply queues'), replies, el('h2', {}, 'Notifications'), notifs);
    return async function update(isCurrent) {
      const z = await getOK('/api/oslo');
      if (!isCurrent()) return;
      problems.replaceChildren(z.problems.length === 0 ? el('p', {}, badge('none', 'ok')) :
        el('ul', { class: 'tight' }, z.problems.map((p) => el('li', { 'data-problem': p.kind + '|' + p.name },
          badge(p.kind === 'no_server' ? 'no server' : 'unread', 'bad'), ' ', p.text, p.vhost !== '/' ? ' (vhost ' + p.vhost + ')' : ''))));
      topics.replaceChildren(table([
        { h: 'Virtual host', f: (t) => t.vhost },
        { h: 'Exchange', f: (t) => t.exchange || el('span', { class: 'muted' }, 'fanout only') },
        { h: 'Topic', f: (t) => t.queue ? queueLink(t.vhost, t.topic) : t.topic, key: 'topic' },
        { h: 'Waiting', f: (t) => t.queue ? fmtNum(t.queue.messages_ready) : '', num: true },
        { h: 'Calls in', f: (t) => t.queue ? fmtRate(t.queue.publish_rate) : '', num: true },
        { h: 'Servers', key: 'servers', f: (t) => t.servers.length === 0 ? badge('no server', 'bad') :
          el('ul', { class: 'tight' }, t.servers.map((s) => el('li', { 'data-server': s.name },
            el('strong', {}, s.name || '(no server queue)'),
            s.queue && s.queue.messages_ready ? ' · ' + fmtNum(s.queue.messages_ready) + ' waiting' : '',
            s.connections.map(connText)))) },
        { h: 'Fanout queues', f: (t) => t.fanout ? fmtNum(t.fanout.queues.length) : '', num: true },
        { h: 'Status', f: (t) => t.no_server ? badge('no server', 'bad') : badge('served', 'ok') }], z.rpc_topics,
      (t) => ({ 'data-topic': t.topic, 'data-vhost': t.vhost })));
      replies.replaceChildren(table([
        { h: 'Virtual host', f: (r) => r.vhost },
        { h: 'Queue', f: (r) => queueLink(r.vhost, r.queue.name) },
        { h: 'Naming', f: (r) => r.style },
        { h: 'Callers', f: (r) => r.callers.map(connText) },
        { h: 'Waiting replies', f: (r) => fmtNum(r.queue.messages_ready), num: true },
        { h: 'Oldest waiting', f: (r) => fmtAge(r.queue.oldest_message_age_ms), num: true },
        { h: 'Status', f: (r) => r.unread ? badge('unread', 'bad') : badge('read', 'ok') }], z.reply_queues,
      (r) => ({ 'data-reply': r.queue.name })));
      notifs.replaceChildren(table([
        { h: 'Virtual host', f: (n) => n.vhost },
        { h: 'Exchange', f: (n) => n.exchange },
        { h: 'Topic', f: (n) => n.topic },
        { h: 'Priority', f: (n) => n.priority },
        { h: 'Depth', f: (n) => n.queue ? fmtNum(n.queue.messages_ready) : '', num: true },
        { h: 'Rate', f: (n) => n.queue ? fmtRate(n.queue.publish_rate) : '', num: true },
        { h: 'Listeners', f: (n) => n.listeners.length ? n.listeners.map(connText) : (n.queue ? badge('none', 'warn') : '') },
        { h: 'Pools', f: (n) => el('ul', { class: 'tight' }, n.pools.map((p) => el('li', {}, el('strong', {}, p.name),
          ' · ' + fmtNum(p.queue.messages_ready) + ' waiting · ' + fmtRate(p.queue.publish_rate) + ' · ' + p.listeners.length + ' listener(s)'))) }],
      z.notifications, (n) => ({ 'data-notification': n.routing_key })));
    };
  };

  pages.admin = function (root) {
    root.append(el('h1', {}, 'Admin'));
    const users = el('div', { id: 'admin-users' });
    const vhosts = el('div', { id: 'admin-vhosts' });
    const perms = el('div', { id: 'admin-permissions' });
    const policies = el('div', { id: 'admin-policies' });
    const policiesHead = el('h2', { id: 'policies-heading', hidden: true }, 'Policies');
    policies.hidden = true;

    const userForm = el('form', { class: 'inline', id: 'add-user' },
      el('label', {}, 'Username', el('input', { name: 'name', required: true })),
      el('label', {}, 'Password', el('input', { name: 'password', type: 'password', required: true, autocomplete: 'new-password' })),
      el('label', {}, 'Tags', el('input', { name: 'tags', placeholder: 'administrator, monitoring, management' })),
      el('button', { type: 'submit' }, 'Add user'));
    userForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const f = new FormData(userForm);
      const r = await api('PUT', '/api/users/' + enc(f.get('name')), { password: f.get('password'), tags: f.get('tags') });
      setStatus(r.status < 300 ? '' : 'add user: ' + reasonOf(r));
      if (r.status < 300) userForm.reset();
      refreshNow();
    });
    const vhForm = el('form', { class: 'inline', id: 'add-vhost' },
      el('label', {}, 'Name', el('input', { name: 'name', required: true })),
      el('button', { type: 'submit' }, 'Add virtual host'));
    vhForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const r = await api('PUT', '/api/vhosts/' + enc(new FormData(vhForm).get('name')), {});
      setStatus(r.status < 300 ? '' : 'add vhost: ' + reasonOf(r));
      if (r.status < 300) vhForm.reset();
      refreshNow();
    });
    const pUser = el('select', { name: 'user' }), pVH = el('select', { name: 'vhost' });
    const permForm = el('form', { class: 'inline', id: 'set-permission' },
      el('label', {}, 'User', pUser), el('label', {}, 'Virtual host', pVH),
      el('label', {}, 'Configure', el('input', { name: 'configure', value: '.*' })),
      el('label', {}, 'Write', el('input', { name: 'write', value: '.*' })),
      el('label', {}, 'Read', el('input', { name: 'read', value: '.*' })),
      el('button', { type: 'submit' }, 'Set permission'));
    permForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const f = new FormData(permForm);
      const r = await api('PUT', '/api/permissions/' + enc(f.get('vhost')) + '/' + enc(f.get('user')),
        { configure: f.get('configure'), write: f.get('write'), read: f.get('read') });
      setStatus(r.status < 300 ? '' : 'set permission: ' + reasonOf(r));
      refreshNow();
    });
    root.append(el('h2', {}, 'Users'), users, userForm, el('h2', {}, 'Virtual hosts'), vhosts, vhForm,
      el('h2', {}, 'Permissions'), perms, permForm, policiesHead, policies);
    let filled = false;
    return async function update(isCurrent) {
      const [u, v, p, pol] = await Promise.all([api('GET', '/api/users'), api('GET', '/api/vhosts'),
        api('GET', '/api/permissions'), api('GET', '/api/policies')]);
      if (!isCurrent()) return;
      if (u.status !== 200) {
        users.replaceChildren(el('p', { class: 'error' }, 'The admin pages need the administrator tag (' + reasonOf(u) + ').'));
        return;
      }
      users.replaceChildren(table([
        { h: 'Name', f: (x) => x.name },
        { h: 'Tags', f: (x) => x.tags.join(', ') },
        { h: '', f: (x) => confirmButton('Delete', 'Really delete?', async () => {
          const r = await api('DELETE', '/api/users/' + enc(x.name));
          setStatus(r.status === 204 ? '' : 'delete user: ' + reasonOf(r));
          refreshNow();
        }) }], u.data, (x) => ({ 'data-user': x.name })));
      vhosts.replaceChildren(table([
        { h: 'Name', f: (x) => x.name },
        { h: 'Ready', f: (x) => fmtNum(x.messages_ready), num: true },
        { h: 'Unacked', f: (x) => fmtNum(x.messages_unacknowledged), num: true },
        { h: 'Total', f: (x) => fmtNum(x.messages), num: true },
        { h: '', f: (x) => confirmButton('Delete', 'Really delete?', async () => {
          const r = await api('DELETE', '/api/vhosts/' + enc(x.name));
          setStatus(r.status === 204 ? '' : 'delete vhost: ' + reasonOf(r));
          refreshNow();
        }) }], v.status === 200 ? v.data : [], (x) => ({ 'data-vhost': x.name })));
      perms.replaceChildren(table([
        { h: 'User', f: (x) => x.user },
        { h: 'Virtual host', f: (x) => x.vhost },
        { h: 'Configure', f: (x) => x.configure },
        { h: 'Write', f: (x) => x.write },
        { h: 'Read', f: (x) => x.read }], p.status === 200 ? p.data : []));
      if (!filled) {
        filled = true;
        pUser.replaceChildren(...u.data.map((x) => el('option', { value: x.name }, x.name)));
        if (v.status === 200) pVH.replaceChildren(...v.data.map((x) => el('option', { value: x.name }, x.name)));
      }
      // Policies show only where the broker answers /api/policies.
      const havePolicies = pol.status === 200 && Array.isArray(pol.data);
      policiesHead.hidden = !havePolicies;
      policies.hidden = !havePolicies;
      if (havePolicies) {
        policies.replaceChildren(table([
          { h: 'Virtual host', f: (x) => x.vhost },
          { h: 'Name', f: (x) => x.name },
          { h: 'Pattern', f: (x) => x.pattern },
          { h: 'Apply to', f: (x) => x['apply-to'] },
          { h: 'Definition', f: (x) => JSON.stringify(x.definition) },
          { h: 'Priority', f: (x) => String(x.priority), num: true }], pol.data, (x) => ({ 'data-policy': x.name })));
      }
    };
  };

  // ---------- routing and polling ----------

  function parseHash() {
    const parts = (location.hash || '#/').replace(/^#\/?/, '').split('/').filter((s) => s !== '').map(decodeURIComponent);
    if (parts.length === 0) return { name: 'overview', args: [] };
    if (parts[0] === 'queues' && parts.length >= 3) return { name: 'queue', args: [parts[1], parts.slice(2).join('/')] };
    if (pages[parts[0]]) return { name: parts[0], args: parts.slice(1) };
    return { name: 'overview', args: [] };
  }

  function route() {
    if (!auth) return showLogin();
    const { name, args } = parseHash();
    gen++;
    const root = $('#page');
    root.replaceChildren();
    setStatus('');
    for (const a of document.querySelectorAll('nav a')) {
      a.classList.toggle('active', a.dataset.page === (name === 'queue' ? 'queues' : name));
    }
    current = { name, update: pages[name](root, args) };
    document.body.dataset.page = name;
    refreshNow();
  }

  async function refreshNow() {
    if (!current) return;
    clearTimeout(timer);
    const mine = gen;
    const isCurrent = () => mine === gen && auth !== null;
    try {
      await current.update(isCurrent);
      if (isCurrent()) {
        setStatus('');
        document.body.dataset.updated = String(Date.now());
        $('#footer-updated').textContent = 'updated ' + new Date().toLocaleTimeString('en-GB') +
          (refreshMs > 0 ? ', every ' + refreshMs / 1000 + ' s' : ', refresh off');
      }
    } catch (e) {
      if (isCurrent()) setStatus(String(e.message || e));
    }
    if (isCurrent() && refreshMs > 0) {
      timer = setTimeout(refreshNow, refreshMs);
    }
  }

  function showLogin(msg) {
    clearTimeout(timer);
    current = null;
    gen++;
    $('#page').replaceChildren();
    $('#nav').hidden = true;
    $('#session').hidden = true;
    $('#login').hidden = false;
    $('#login-error').textContent = msg || '';
    document.body.dataset.page = 'login';
    $('#login-user').focus();
  }

  function logout(msg) {
    auth = null;
    whoami = null;
    store.removeItem('oslogo.auth');
    showLogin(msg);
  }

  async function login(user, pass) {
    auth = basic(user, pass);
    let r;
    try {
      r = await api('GET', '/api/whoami');
    } catch (e) {
      auth = null;
      $('#login-error').textContent = 'Cannot reach the broker: ' + e.message;
      return;
    }
    if (r.status !== 200) {
      auth = null;
      $('#login-error').textContent = (r.data && r.data.reason) || 'Login failed';
      return;
    }
    store.setItem('oslogo.auth', auth);
    enter(r.data);
  }

  function enter(me) {
    whoami = me;
    $('#login').hidden = true;
    $('#nav').hidden = false;
    $('#session').hidden = false;
    $('#who').textContent = 'User ' + me.name + (me.tags.length ? ' (' + me.tags.join(', ') + ')' : '');
    route();
  }

  $('#login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    login($('#login-user').value, $('#login-pass').value);
  });
  $('#logout').addEventListener('click', () => logout(''));
  const refreshSel = $('#refresh');
  refreshSel.value = String(refreshMs);
  refreshSel.addEventListener('change', () => {
    refreshMs = Number(refreshSel.value);
    store.setItem('oslogo.refresh', String(refreshMs));
    refreshNow();
  });
  window.addEventListener('hashchange', () => { if (auth) route(); });

  (async function start() {
    if (!auth) return showLogin();
    const r = await api('GET', '/api/whoami').catch(() => null);
    if (!r || r.status !== 200) return logout(r ? 'Log in again.' : 'Cannot reach the broker.');
    enter(r.data);
  })();
})();
