// The transparency page: reads the public JSON endpoints and draws them. No framework: text
// is always set with textContent (never parsed as markup), and amounts stay exact strings or
// BigInts until they are displayed (only the chart's coordinates are floats).
"use strict";

(function () {
  const REFRESH_MS = 15000;
  const DEFAULT_DECIMALS = 18; // $SERV's, and what the server assumes without a chain
  const BURNS_PAGE = 200;
  const DEPOSITS_PAGE = 50;
  const DEPOSIT_STATUS = {
    credited: "Credited", seen: "Confirming", unattributed: "No known reference",
    dropped: "Dropped by a reorg", reversed: "Reversed by a reorg",
  };
  const CHECK_LABELS = {
    burn_recorded: "The burn is in our records",
    receipt_success: "The burn transaction succeeded on chain",
    transfer_to_burn_address: "$SERV moved from the treasury to the burn address",
    amount_matches_record: "The amount burned on chain equals our record",
    swap_output_equals_burn_input: "The swaps bought exactly the $SERV that was burned",
    confirmations: "Enough blocks confirm the burn",
  };
  const verifications = new Map(); // buyback id -> {pending} | {ok, body} | {error}
  let chart = null;
  let lastChartData = null;
  let lastBurns = null;
  let lastDeposits = null;

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  // `fresh`: past any cached copy (the API lets caches keep /burns* for 30 s).
  async function getJSON(path, fresh = false) {
    const r = await fetch(path, { headers: { Accept: "application/json" },
                                  cache: fresh ? "no-cache" : "default" });
    let body = null;
    try { body = await r.json(); } catch (_) { /* not JSON: reported by status */ }
    return { ok: r.ok, status: r.status, body };
  }

  // --- exact decimal formatting -----------------------------------------------------------------
  function group(intPart) {
    return intPart.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  function splitDecimal(s) {
    let str = String(s).trim();
    const neg = str.startsWith("-");
    if (neg || str.startsWith("+")) str = str.slice(1);
    const [i, f = ""] = str.split(".");
    return { neg, int: i.replace(/^0+(?=\d)/, "") || "0", frac: f };
  }

  function usd(s) {
    if (s === null || s === undefined) return "–";
    const d = splitDecimal(s);
    let frac = d.frac.replace(/0+$/, "");
    if (frac.length < 2) frac = frac.padEnd(2, "0");
    return (d.neg ? "−$" : "$") + group(d.int) + "." + frac;
  }

  function unitsToDecimal(units, decimals) {
    let n = BigInt(units);
    const neg = n < 0n;
    if (neg) n = -n;
    const s = n.toString().padStart(decimals + 1, "0");
    const int = s.slice(0, s.length - decimals);
    const frac = s.slice(s.length - decimals).replace(/0+$/, "");
    return (neg ? "-" : "") + int + (frac ? "." + frac : "");
  }

  // Whole tokens with at most `places` decimals (truncated); the exact value goes in a title.
  function tokens(s, places = 4) {
    const d = splitDecimal(s);
    const frac = d.frac.slice(0, places).replace(/0+$/, "");
    const zero = d.int === "0" && !frac;
    if (zero && /[1-9]/.test(d.frac)) return (d.neg ? "−" : "") + "< 0." + "0".repeat(places - 1) + "1";
    return (d.neg ? "−" : "") + group(d.int) + (frac ? "." + frac : "");
  }

  function setValue(id, text, exact, cls) {
    const node = $(id);
    node.textContent = text;
    node.title = exact || "";
    node.className = "value" + (cls ? " " + cls : "");
  }

  function shortHash(h) {
    return h.length > 20 ? h.slice(0, 10) + "…" + h.slice(-8) : h;
  }

  function hashLink(hash, url) {
    if (!hash) return el("span", { class: "note", text: "–" });
    const attrs = { class: "hash", title: hash, "data-hash": hash, text: shortHash(hash) };
    if (url) return el("a", { ...attrs, href: url, target: "_blank", rel: "noopener noreferrer" });
    return el("code", attrs);
  }

  // What the swaps really spent when the server reports it (usd_swapped, beside the USD claimed
  // from the ledger); servers without that field report usd_amount only.
  function burnUsd(item) {
    return item.usd_swapped ?? item.usd_amount;
  }

  // --- headline figures ------------------------------------------------------------------------
  // `network` is /network: public, its `ledger` the figures /metrics has too (which a
  // deployment may close with METRICS_TOKEN).
  function renderTotals(network, summary, burnCount) {
    const m = network.ok ? network.body.ledger : null;
    const s = summary.ok ? summary.body : null;
    const decimals = s ? s.decimals : DEFAULT_DECIMALS;
    setValue("revenue", m ? usd(m.revenue_usd) : "–");
    const bought = (s && (s.total_usd_swapped ?? s.total_usd)) ?? (m && m.bought_usd);
    setValue("bought", usd(bought));
    const notes = [];
    const count = s ? s.burns : burnCount;
    if (count !== null) notes.push(`${count} buyback${count === 1 ? "" : "s"} burned`);
    if (m && m.unallocated_usd && !/^0*(\.0*)?$/.test(m.unallocated_usd)) {
      notes.push(`${usd(m.unallocated_usd)} waiting for the next buyback`);
    }
    if (m && m.active_buyback_id !== null) notes.push(`buyback #${m.active_buyback_id} in progress`);
    $("bought-note").textContent = notes.length ? notes.join("; ") : "USD that bought $SERV";

    const recorded = s ? s.recorded_burned_decimal
      : m ? unitsToDecimal(m.serv_burned, decimals) : null;
    setValue("recorded", recorded === null ? "–" : tokens(recorded), recorded);

    if (!s) {
      setValue("onchain", "–");
      $("onchain-note").textContent = "needs the blockchain";
      setValue("difference", "–");
      $("difference-note").textContent = "needs the blockchain";
      return;
    }
    setValue("onchain", tokens(s.chain_burn_address_balance_decimal), s.chain_burn_address_balance_decimal);
    $("onchain-note").textContent = `balance of burn address ${shortHash(s.burn_address)} at block ${s.block_number}`;
    $("onchain-note").title = s.burn_address;
    const diff = BigInt(s.difference);
    if (diff === 0n) {
      setValue("difference", "0", null, "good");
      $("difference-note").textContent = "They match: the chain holds exactly the $SERV our records "
        + "say we burned.";
    } else if (diff > 0n) {
      setValue("difference", "+" + tokens(s.difference_decimal, 6), s.difference_decimal);
      $("difference-note").textContent = "More on chain than we recorded: anyone can send $SERV to the "
        + "burn address, and someone did. It is burned all the same.";
    } else {
      setValue("difference", tokens(s.difference_decimal, 6), s.difference_decimal, "bad");
      $("difference-note").textContent = "Less on chain than our records: a recorded burn is not on "
        + "this chain. Use Verify on each burn below to find which.";
    }
  }

  function renderChainBanner(summary) {
    const banner = $("chain-banner");
    if (summary.ok) { banner.hidden = true; return; }
    const code = summary.body && summary.body.error;
    const detail = summary.body && summary.body.detail;
    const unconfigured = code === "treasury_unconfigured" || code === "treasury_no_signer";
    banner.replaceChildren(
      el("strong", { text: unconfigured ? "This server is not connected to a blockchain."
        : "The blockchain is unreachable right now." }),
      el("span", { text: (unconfigured ? "On-chain figures and the Verify buttons need it; "
        : "On-chain figures and the Verify buttons are unavailable until it answers; ")
        + "everything else below comes from our records." + (detail ? ` (${detail})` : "") }));
    banner.hidden = false;
  }

  // --- chart -----------------------------------------------------------------------------------
  function chartData(burns, recordedUnits, decimals) {
    const items = burns.items.filter((b) => b.burned_at).slice().reverse(); // oldest first
    let listed = 0n;
    for (const b of items) listed += BigInt(b.serv_burned);
    // Only the latest page is listed: the line starts from what was burned before it.
    let cum = burns.total > burns.items.length && recordedUnits !== null ? recordedUnits - listed : 0n;
    if (cum < 0n) cum = 0n;
    const xs = [], servs = [], usds = [];
    for (const b of items) {
      cum += BigInt(b.serv_burned);
      xs.push(Date.parse(b.burned_at) / 1000);
      servs.push(Number(unitsToDecimal(cum, decimals)));
      usds.push(Number(burnUsd(b)));
    }
    return [xs, servs, usds];
  }

  function compact(v) {
    if (v === null || v === undefined) return "";
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(1).replace(/\.0$/, "") + "B";
    if (a >= 1e6) return (v / 1e6).toFixed(1).replace(/\.0$/, "") + "M";
    if (a >= 1e3) return (v / 1e3).toFixed(1).replace(/\.0$/, "") + "k";
    return String(Math.round(v * 1000) / 1000);
  }

  function chartSize() {
    const width = Math.max(260, $("chart").clientWidth - 16);
    return { width, height: width < 500 ? 220 : 300 };
  }

  function makeChart(data) {
    const styles = getComputedStyle(document.documentElement);
    const muted = styles.getPropertyValue("--muted").trim() || "#5b6470";
    const line = styles.getPropertyValue("--line").trim() || "#dde1e6";
    const axis = { stroke: muted, grid: { stroke: line, width: 1 }, ticks: { stroke: line } };
    const pad = (min, max) => (min === max ? [min - 3600, max + 3600]
      : [min - (max - min) * 0.05, max + (max - min) * 0.05]);
    const opts = {
      ...chartSize(),
      // Values under the cursor where there is one; on a touch screen, just the key.
      legend: { live: window.matchMedia("(hover: hover)").matches },
      scales: {
        // From the data: with one point, uPlot's own time range would span 1000 days.
        x: { time: true, range: (u) => pad(u.data[0][0], u.data[0][u.data[0].length - 1]) },
        serv: { range: (u, min, max) => [0, max > 0 ? max * 1.12 : 1] },
        usd: { range: (u, min, max) => [0, max > 0 ? max * 1.25 : 1] },
      },
      axes: [
        { ...axis },
        { ...axis, scale: "serv", label: "$SERV burned, total", size: 60, values: (u, vs) => vs.map(compact) },
        { ...axis, scale: "usd", side: 1, label: "USD per buyback", size: 60, grid: { show: false },
          values: (u, vs) => vs.map((v) => "$" + compact(v)) },
      ],
      series: [
        {},
        // A step: the total jumps at each burn and stays there until the next.
        { label: "Total $SERV burned", scale: "serv", stroke: "#d9480f", width: 2,
          fill: "rgba(217,72,15,0.10)", points: { show: true, size: 6 },
          paths: uPlot.paths.stepped({ align: 1 }),
          value: (u, v) => (v === null ? "–" : compact(v)) },
        { label: "USD per buyback", scale: "usd", stroke: "#1c7ed6", fill: "rgba(28,126,214,0.45)",
          paths: uPlot.paths.bars({ size: [0.6, 28] }), points: { show: false },
          value: (u, v) => (v === null ? "–" : "$" + v) },
      ],
    };
    return new uPlot(opts, data, $("chart"));
  }

  function renderChart(burns, recordedUnits, decimals) {
    const holder = $("chart");
    if (typeof uPlot === "undefined") {
      holder.textContent = "The chart library did not load.";
      return;
    }
    const data = chartData(burns, recordedUnits, decimals);
    if (!data[0].length) {
      if (chart) { chart.destroy(); chart = null; }
      holder.replaceChildren(el("p", { class: "caption", text: "The chart appears after the first burn." }));
      return;
    }
    const key = JSON.stringify(data);
    if (chart && key === lastChartData) return;
    lastChartData = key;
    if (chart) { chart.setData(data); return; }
    holder.replaceChildren();
    chart = makeChart(data);
  }

  window.addEventListener("resize", () => { if (chart) chart.setSize(chartSize()); });

  // --- burns table -----------------------------------------------------------------------------
  function renderVerification(id, td) {
    const v = verifications.get(id);
    td.replaceChildren();
    if (!v) return;
    if (v.pending) { td.append(el("p", { class: "verdict", text: "Checking the chain…" })); return; }
    if (v.error) { td.append(el("p", { class: "verdict bad", text: v.error })); return; }
    const body = v.body;
    const failed = body.checks.filter((c) => !c.ok).length;
    td.append(el("p", {
      class: "verdict " + (body.verified ? "ok" : "bad"),
      text: body.verified
        ? `✓ Verified: all ${body.checks.length} checks passed (chain at block ${body.block_number})`
        : `✗ Not verified: ${failed} of ${body.checks.length} checks failed (chain at block ${body.block_number})`,
    }));
    const list = el("ul", { class: "checks" });
    for (const c of body.checks) {
      list.append(el("li", { class: c.ok ? "ok" : "bad", "data-check": c.name },
        el("span", { class: "mark", text: c.ok ? "✓" : "✗" }),
        el("span", { text: CHECK_LABELS[c.name] || c.name.replace(/_/g, " ") }),
        el("span", { class: "detail", text: c.detail })));
    }
    td.append(list);
  }

  // Paints into whatever row is on the page now: a refresh may have redrawn the table meanwhile.
  function paintVerification(id) {
    const row = document.querySelector(`tr.result[data-for="${id}"]`);
    const button = document.querySelector(`button.verify[data-id="${id}"]`);
    const v = verifications.get(id);
    if (!row || !button) return;
    row.hidden = !v;
    button.disabled = Boolean(v && v.pending);
    button.textContent = v && !v.pending ? "Verify again" : "Verify";
    renderVerification(id, row.firstElementChild);
  }

  async function verify(id) {
    verifications.set(id, { pending: true });
    paintVerification(id);
    try {
      const r = await getJSON(`/burns/${id}/verify`, true); // "Verify again" re-reads the chain
      if (r.ok) verifications.set(id, { body: r.body });
      else if (r.status === 503) {
        verifications.set(id, { error: "Cannot verify now: the blockchain is unreachable"
          + (r.body && r.body.detail ? ` (${r.body.detail})` : "") + ". Try again in a moment." });
      } else {
        verifications.set(id, { error: `Verification failed: ${r.status} ${(r.body && r.body.detail) || ""}` });
      }
    } catch (e) {
      verifications.set(id, { error: "Cannot reach this server to verify. Try again in a moment." });
    }
    paintVerification(id);
  }

  function renderBurns(burns, decimals) {
    const key = JSON.stringify(burns) + decimals;
    if (key === lastBurns) return; // unchanged: keep focus, selection and open results as they are
    lastBurns = key;
    const tbody = $("burns").querySelector("tbody");
    const rows = [];
    for (const b of burns.items) {
      const id = b.buyback_id;
      const date = b.burned_at ? new Date(b.burned_at) : null;
      const swaps = el("td", { "data-label": "Swap tx" });
      b.swap_tx_hashes.forEach((h, i) => {
        if (i) swaps.append(el("br"));
        swaps.append(hashLink(h, b.swap_explorer_urls[i]));
      });
      const serv = b.serv_burned_decimal || unitsToDecimal(b.serv_burned, decimals);
      const button = el("button", { class: "verify", type: "button", "data-id": id, text: "Verify" });
      const resultRow = el("tr", { class: "result", "data-for": id }, el("td", { colspan: 6 }));
      button.addEventListener("click", () => verify(id));
      rows.push(el("tr", { class: "burn", "data-id": id },
        el("td", { "data-label": "Date", title: b.burned_at || "",
                   text: date ? date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }) : "–" }),
        el("td", { class: "num", "data-label": "USD", text: usd(burnUsd(b)) }),
        el("td", { class: "num", "data-label": "$SERV burned", title: serv, text: tokens(serv) }),
        swaps,
        el("td", { "data-label": "Burn tx" }, hashLink(b.burn_tx_hash, b.burn_explorer_url)),
        el("td", { class: "action" }, button)), resultRow);
    }
    tbody.replaceChildren(...rows);
    for (const b of burns.items) paintVerification(b.buyback_id);
    $("burns").hidden = !burns.items.length;
    $("burns-empty").hidden = burns.items.length > 0;
    const more = $("burns-more");
    more.hidden = burns.total <= burns.items.length;
    more.textContent = more.hidden ? "" : `Showing the latest ${burns.items.length} of ${burns.total} burns; `
      + `the rest are in /burns?offset=${burns.items.length}.`;
  }

  // --- deposits in ----------------------------------------------------------------------------
  // `deposits` is /deposits (our records only: works without the chain); the credited total is
  // the summary's when it answers, the same figure.
  function renderDepositTotals(deposits, summary) {
    const s = summary.ok ? summary.body : null;
    const d = deposits.ok ? deposits.body : null;
    const total = (s && s.deposits_usd) ?? (d && d.credited_usd);
    const count = (s && s.deposits_credited) ?? (d && d.credited_count);
    setValue("deposits-in", total === null || total === undefined ? "–" : usd(total));
    $("deposits-note").textContent = count === null || count === undefined
      ? "stablecoin paid in by businesses, on chain"
      : `${count} deposit${count === 1 ? "" : "s"} credited`
        + (d ? ` after ${d.confirmations} confirmation${d.confirmations === 1 ? "" : "s"}` : "");
  }

  function renderDeposits(deposits) {
    const key = JSON.stringify(deposits);
    if (key === lastDeposits) return;
    lastDeposits = key;
    const rows = deposits.items.map((x) => {
      const date = new Date(x.credited_at || x.seen_at);
      return el("tr", { class: "deposit " + x.status, "data-id": x.id, "data-status": x.status },
        el("td", { "data-label": "Date", title: x.credited_at || x.seen_at,
                   text: date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }) }),
        el("td", { class: "num", "data-label": "USD", text: usd(x.amount_usd) }),
        el("td", { "data-label": "Status", text: DEPOSIT_STATUS[x.status] || x.status }),
        el("td", { class: "num", "data-label": "Block", text: String(x.block_number) }),
        el("td", { "data-label": "Transaction" }, hashLink(x.tx_hash, x.explorer_url)));
    });
    $("deposits").querySelector("tbody").replaceChildren(...rows);
    $("deposits").hidden = !deposits.items.length;
    $("deposits-empty").hidden = deposits.items.length > 0;
    const more = $("deposits-more");
    more.hidden = deposits.total <= deposits.items.length;
    more.textContent = more.hidden ? "" : `Showing the latest ${deposits.items.length} of `
      + `${deposits.total} deposits; the rest are in /deposits?offset=${deposits.items.length}.`;
  }

  // --- the network now -------------------------------------------------------------------------
  function renderNetwork(network) {
    if (!network.ok) {
      for (const id of ["miners", "chat-rate", "idle-rate", "queues", "checks", "scores"]) {
        setValue(id, "–");
      }
      return;
    }
    const n = network.body;
    setValue("miners", String(n.active_miners));
    $("miners-note").textContent = "seen in the last 5 minutes";
    const rate = (v) => (v === undefined ? "–" : (Math.round(v * 10) / 10).toString());
    setValue("chat-rate", rate(n.jobs_per_minute.chat));
    setValue("idle-rate", rate(n.jobs_per_minute.idle));
    for (const node of document.querySelectorAll(".rate-note")) {
      node.textContent = `average over the last ${Math.round(n.window_s / 60)} minutes`;
    }
    const depth = (v) => (v === null || v === undefined ? "?" : String(v));
    setValue("queues", `${depth(n.queue_depth.chat)} · ${depth(n.queue_depth.idle)}`);
    renderTrust(n.trust);
  }

  // `trust` is /network's record of the checks of miners' answers (verification, canaries,
  // feedback): checks judged in the last hour, and the wallets' scores by tenths
  function renderTrust(trust) {
    if (!trust) return;
    const day = trust.checks_per_hour.reduce(
      (sum, h) => ({ passed: sum.passed + h.passed, failed: sum.failed + h.failed }),
      { passed: 0, failed: 0 });
    setValue("checks", String(trust.checks_last_hour));
    $("checks-note").textContent = `last 24 h: ${day.passed} passed · ${day.failed} failed`;
    const buckets = trust.score_distribution;
    const total = buckets.reduce((sum, b) => sum + b.miners, 0);
    const good = buckets.filter((b) => b.below > 0.5).reduce((sum, b) => sum + b.miners, 0);
    setValue("scores", `${good} of ${total}`);
    $("scores-note").textContent =
      `score ≥ 0.5; ${trust.miners_suspended} suspended (GET /miners/{address})`;
  }

  // --- refresh loop ----------------------------------------------------------------------------
  function showError(text) {
    const banner = $("error-banner");
    banner.hidden = !text;
    banner.textContent = text || "";
  }

  async function refresh() {
    const [summary, burns, network, deposits] = await Promise.all([
      getJSON("/burns/summary"), getJSON(`/burns?limit=${BURNS_PAGE}`),
      getJSON("/network", true),  // its ledger: revenue shows on the next refresh
      getJSON(`/deposits?limit=${DEPOSITS_PAGE}`)]);
    renderChainBanner(summary);
    const failed = [[burns, "/burns"], [network, "/network"], [deposits, "/deposits"]]
      .filter(([r]) => !r.ok)
      .map(([r, path]) => `${path}: ${(r.body && r.body.detail) || "HTTP " + r.status}`);
    showError(failed.length ? "Some figures could not be loaded — " + failed.join("; ") : "");
    renderTotals(network, summary, burns.ok ? burns.body.total : null);
    const decimals = summary.ok ? summary.body.decimals : DEFAULT_DECIMALS;
    if (burns.ok) {
      const recorded = summary.ok ? BigInt(summary.body.recorded_burned)
        : network.ok ? BigInt(network.body.ledger.serv_burned) : null;
      renderBurns(burns.body, decimals);
      renderChart(burns.body, recorded, decimals);
    }
    renderDepositTotals(deposits, summary);
    if (deposits.ok) renderDeposits(deposits.body);
    renderNetwork(network);
  }

  async function loop() {
    try {
      if (!document.hidden) {
        await refresh();
        $("status").textContent = `Updated ${new Date().toLocaleTimeString()} · refreshes every ${REFRESH_MS / 1000} s`;
      }
    } catch (e) {
      showError("This page cannot reach the server right now; it will keep trying every "
        + `${REFRESH_MS / 1000} s.`);
      $("status").textContent = `Last attempt ${new Date().toLocaleTimeString()} failed`;
    }
    setTimeout(loop, REFRESH_MS);
  }

  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh().catch(() => {}); });
  loop();
})();
