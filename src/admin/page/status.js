// The status page: polls /admin/status every second (the samples since the last one it has) and
// draws it. Read-only: it changes nothing, and shows the command to run where an action fits.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const WINDOW = 300; // seconds drawn
const RATE_WINDOW = 10; // seconds the rates above the chart average over
const view = { samples: [], last: 0 };

const $ = (id) => document.getElementById(id);

function text(id, value) {
  const el = $(id);
  if (el.textContent !== value) el.textContent = value;
}

function element(tag, attrs, content) {
  const el = tag === 'svg-text' ? document.createElementNS(SVG, 'text')
    : ['polyline', 'line'].includes(tag) ? document.createElementNS(SVG, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (content !== undefined) el.textContent = content;
  return el;
}

function ago(seconds) {
  if (seconds < 90) return `${seconds.toFixed(0)} s ago`;
  if (seconds < 5400) return `${(seconds / 60).toFixed(0)} min ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

function fmt(n, digits = 1) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  return Math.abs(n) >= 100 ? n.toFixed(0) : n.toFixed(digits);
}

const WORDS = { closed: 'closed', open: 'open', half_open: 'half-open' };

function renderBreaker(state, rules, samples) {
  const b = state.breaker && state.breaker.view;
  if (!b) {
    text('breaker-state', state.role === 'upstream' ? 'no breaker in this process (role upstream)' : 'unavailable');
    return;
  }
  const held = b.override;
  let key = b.state;
  let words = WORDS[b.state] || b.state;
  if (held && held.kind === 'force_open') {
    key = 'forced-open';
    words = 'forced open';
  } else if (held && held.kind === 'force_closed') {
    key = 'forced-closed';
    words = `forced closed (the breaker itself reads ${WORDS[b.state] || b.state})`;
  }
  if (!state.breaker.enforced) words += ' (shadow mode: refuses nothing)';
  const el = $('breaker-state');
  el.dataset.state = key;
  el.className = `big state-${held ? 'forced' : b.state}`;
  text('breaker-state', words);
  const circle = $('breaker-circle');
  circle.setAttribute('class', held ? 'forced' : b.state);
  // Its size shows traffic: calls per second over the last seconds, on a log scale.
  const recent = samples.slice(-RATE_WINDOW);
  const rate = recent.reduce((a, s) => a + s.calls_first + s.breaker_open, 0) / Math.max(1, recent.length);
  circle.setAttribute('r', String(14 + Math.min(34, 8 * Math.log10(1 + rate))));
  text('breaker-why', `${b.reason}, ${ago(b.changed_seconds_ago)}`);
  const rule = rules && rules.breaker;
  text('breaker-rule', rule ? `Rule (${rule.mode}): ${rule.rule}.` : '');
  let now = '';
  if (rule && rule.mode === 'consecutive' && b.consecutive_failures !== null && b.consecutive_failures !== undefined) {
    now = `Now: ${b.consecutive_failures} of ${rule.failure_threshold} failures in a row.`;
  } else if (rule && rule.mode === 'failure_rate') {
    now = `Now: ${fmt(100 * b.failure_rate)} % failed of ${fmt(100 * rule.failure_rate_threshold, 0)} %; `
      + `${fmt(100 * b.slow_call_rate)} % slow.`;
  } else if (b.rejection_probability !== null && b.rejection_probability !== undefined) {
    now = `Now: ${fmt(100 * b.rejection_probability)} % of calls refused locally.`;
  }
  text('breaker-now', now);
}

function renderAdmission(state, rules, samples) {
  const a = state.admission;
  if (!a) {
    text('admission-mode', '');
    return;
  }
  text('admission-mode', `(${rules ? rules.admission : ''}${a.enforced ? '' : ', shadow mode'})`);
  const bars = $('bars');
  for (const p of ['high', 'normal', 'low']) {
    let bar = $(`bar-${p}`);
    if (!bar) {
      bar = element('div', { class: 'bar', id: `bar-${p}` });
      const label = element('div', { class: 'label' });
      label.append(element('span', {}, p), element('span', { id: `bar-${p}-text` }));
      const track = element('div', { class: 'track' });
      track.append(element('div', { class: 'fill', id: `bar-${p}-fill` }));
      bar.append(label, track);
      bars.append(bar);
    }
    const limit = a.limits[p];
    bar.dataset.inflight = String(a.inflight);
    bar.dataset.limit = String(limit);
    const full = a.inflight >= limit;
    text(`bar-${p}-text`, `${a.inflight} in flight of ${limit}${full ? ': full, this class is shed' : ''}`);
    const fill = $(`bar-${p}-fill`);
    fill.style.width = `${Math.min(100, (100 * a.inflight) / Math.max(1, limit))}%`;
    fill.className = full ? 'fill full' : 'fill';
  }
  const extra = [`${a.queued} waiting in the backlog`];
  if (a.shadow_inflight) extra.push(`${a.shadow_inflight} running only by shadow mode`);
  const last = samples[samples.length - 1];
  if (rules && rules.admission === 'adaptive' && last) {
    extra.push(`latency: recent ${fmt(last.latency_short_ms)} ms, baseline ${fmt(last.latency_long_ms)} ms`);
  }
  text('admission-extra', `${extra.join('; ')}. The classes share one pool; each has its own ceiling.`);
  const t = a.tenants;
  $('tenants').hidden = !t;
  if (t) {
    text('tenants-summary', `${t.active} active, ${t.tracked} tracked (header ${t.header}). Heaviest shed over the last minute:`);
    const list = $('tenants-heaviest');
    const heaviest = t.heaviest_shed_last_minute.length ? t.heaviest_shed_last_minute : t.heaviest_shed_now;
    list.replaceChildren(...(heaviest.length
      ? heaviest.map(([name, n]) => element('li', {}, `${name}: ${n} shed`))
      : [element('li', {}, 'none shed')]));
  }
}

function renderRetries(state, samples) {
  const recent = samples.slice(-RATE_WINDOW);
  const per = (k) => recent.reduce((a, s) => a + s[k], 0) / Math.max(1, recent.length);
  if (state.retry_budget_left === null || state.retry_budget_left === undefined) {
    text('retries', 'Off (retry.max_attempts = 1, no hedging).');
    return;
  }
  text('retries', `Budget left: ${fmt(state.retry_budget_left)} tokens. Refused by the budget: `
    + `${fmt(per('budget_exhausted'))}/s. Retries ${fmt(per('calls_retry'))}/s, hedges ${fmt(per('calls_hedge'))}/s.`);
}

function renderOverrides(state) {
  const items = [];
  const b = state.breaker;
  if (b && b.view && b.view.override) {
    const o = b.view.override;
    items.push([`Breaker held ${o.kind === 'force_open' ? 'open' : 'closed'} by ${o.by}, ${ago(o.held_seconds)}${o.expires_in_seconds !== null
      ? `, lifts in ${fmt(o.expires_in_seconds, 0)} s` : ', until released'}.`, 'load-shed-api admin breaker auto']);
  }
  const a = state.admission;
  if (a && a.pinned) {
    const p = a.pinned;
    items.push([`Admission limit pinned to ${p.limit} by ${p.by}${p.expires_in_seconds !== null
      ? `, lifts in ${fmt(p.expires_in_seconds, 0)} s` : ', until released'}.`, 'load-shed-api admin limit auto']);
  }
  for (const [component, held, enforced] of [
    ['breaker', b && b.shadow_override, b && b.enforced],
    ['admission', state.admission_shadow_override, a && a.enforced]]) {
    if (held) {
      const lifts = held.expires_in_seconds !== null && held.expires_in_seconds !== undefined
        ? `, lifts in ${fmt(held.expires_in_seconds, 0)} s` : ', until switched back';
      items.push([`Shadow mode of ${component} switched ${held.shadow ? 'on' : 'off'} by ${held.by}${lifts}.`,
        `load-shed-api admin shadow ${component} ${held.shadow ? 'off' : 'on'}`]);
    } else if (enforced === false) {
      items.push([`Shadow mode of ${component} is on (configuration): it refuses nothing, and counts what it would.`, null]);
    }
  }
  $('overrides').hidden = items.length === 0;
  $('override-list').replaceChildren(...items.map(([what, command]) => {
    const li = element('li', {}, what + (command ? ' To lift it: ' : ''));
    if (command) li.append(element('code', {}, command));
    return li;
  }));
}

/** Seconds the charts span: the history there is, at least a minute, at most WINDOW. */
function span(samples, now) {
  return samples.length ? Math.min(WINDOW, Math.max(60, now - samples[0].t + 1)) : 60;
}

function chart(id, series, samples, now) {
  const svg = $(id);
  const width = span(samples, now);
  let max = 0;
  for (const s of samples) for (const [k] of series) if (s[k] !== null && s[k] > max) max = s[k];
  max = max > 0 ? max * 1.1 : 1;
  const children = [];
  for (const [k] of series) {
    const points = [];
    for (const s of samples) {
      if (s[k] === null || s[k] === undefined) continue;
      const x = 300 - (now - s.t) * (300 / width);
      if (x < 0) continue;
      points.push(`${x.toFixed(1)},${(100 - (100 * s[k]) / max).toFixed(1)}`);
    }
    children.push(element('polyline', { class: `s-${k}`, points: points.join(' ') }));
  }
  children.push(element('svg-text', { x: '2', y: '8' }, fmt(max / 1.1)));
  svg.replaceChildren(...children);
  const legend = $(id.replace('chart-', 'legend-'));
  if (!legend.childElementCount) legend.append(...series.map(([k, label]) => element('span', { class: `s-${k}` }, label)));
}

const OUTCOMES = [['ok', 'ok (200)'], ['shed', 'shed (429)'], ['breaker_open', 'breaker open (503)'],
  ['timeout', 'timeout (504)'], ['error', 'error (502)'], ['other', 'other']];

function renderRates(samples) {
  const recent = samples.slice(-RATE_WINDOW);
  const el = $('rates');
  if (!recent.length) return;
  const from = recent[0].t - 1;
  const to = recent[recent.length - 1].t;
  el.replaceChildren(element('span', {}, `Last ${recent.length} s:`), ...OUTCOMES.map(([k, label]) => {
    const total = recent.reduce((a, s) => a + s[k], 0);
    const span = element('span', { id: `rate-${k}`, class: `s-${k}` }, `${label} ${fmt(total / recent.length)}/s`);
    span.dataset.count = String(total);
    span.dataset.from = String(from);
    span.dataset.to = String(to);
    return span;
  }));
}

function render(data) {
  const state = data.state;
  text('role', `role ${state.role}`);
  const samples = view.samples;
  const now = samples.length ? samples[samples.length - 1].t : Date.now() / 1000;
  renderOverrides(state);
  renderBreaker(state, data.rules, samples);
  renderAdmission(state, data.rules, samples);
  renderRetries(state, samples);
  renderRates(samples);
  chart('chart-outcomes', OUTCOMES, samples, now);
  chart('chart-calls', [['calls_first', 'first calls'], ['calls_retry', 'retries'], ['calls_hedge', 'hedges']], samples, now);
  chart('chart-latency', [['p50_ms', 'p50'], ['p99_ms', 'p99']], samples, now);
  chart('chart-inflight', [['inflight', 'in flight'], ['limit', 'limit (high)']], samples, now);
  text('span', `now: the last ${span(samples, now).toFixed(0)} s`);
}

function connected(up, why) {
  const el = $('conn');
  el.className = up ? 'conn up' : 'conn down';
  el.textContent = up ? 'live' : `not updating: ${why}`;
  if (up) text('updated', `updated ${new Date().toLocaleTimeString()}`);
}

async function poll() {
  try {
    const res = await fetch(`/admin/status?since=${view.last}`, { cache: 'no-store', credentials: 'same-origin' });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const data = await res.json();
    for (const s of data.samples) view.samples.push(s);
    if (view.samples.length) view.last = view.samples[view.samples.length - 1].t;
    const keep = data.history_seconds || WINDOW;
    if (view.samples.length > keep) view.samples.splice(0, view.samples.length - keep);
    render(data);
    connected(true);
  } catch (e) {
    connected(false, e.message);
  }
  setTimeout(poll, 1000);
}

poll();
