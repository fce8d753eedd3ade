// The status page's live part: polls the admin API every second and updates the three tables in place.
// Every value is put on the page as text (textContent), never as HTML. Retry buttons POST to
// /api/actions/<id>/retry with the session cookie and the X-Listener-Status header the API asks for.
(function () {
  "use strict";

  const body = document.body;
  const API = body.dataset.api || "/api";
  const ROWS = Number(body.dataset.rows || 50);
  const CSRF_HEADER = body.dataset.csrfHeader || "X-Listener-Status";
  const POLL_MS = 1000;
  const TRANSFER_KINDS = ["download", "ftp_push"];

  function when(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    return isNaN(date) ? "" : date.toISOString().slice(0, 19).replace("T", " ");
  }

  function bytes(count) {
    if (count === null || count === undefined) return "";
    let value = Number(count);
    if (value < 1000) return Math.trunc(value) + " B";
    const units = ["kB", "MB", "GB", "TB"];
    let unit = 0;
    value /= 1000;
    while (value >= 1000 && unit < units.length - 1) {
      value /= 1000;
      unit += 1;
    }
    return value.toFixed(1) + " " + units[unit];
  }

  // A DOM element with attributes and children; strings become text nodes.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === "") continue;
      node.appendChild(typeof child === "string" || typeof child === "number"
        ? document.createTextNode(String(child)) : child);
    }
    return node;
  }

  function badge(text) {
    return el("span", { class: "badge badge-" + (text || "none") }, text || "");
  }

  // --- the three tables ---------------------------------------------------------------------------------

  const labels = new Map(); // item id -> the file name (or key) shown for its actions

  function fileLabel(item) {
    const data = item.data || {};
    return String(data.file_name || data.name || data.title || item.key || "");
  }

  function transferView(action) {
    const total = action.bytes_total;
    const done = action.bytes_done || 0;
    const percent = total ? Math.min(100, Math.floor((done * 100) / total)) : (action.status === "done" ? 100 : 0);
    return {
      action: action,
      file: labels.has(action.item_id) ? labels.get(action.item_id) : "",
      percent: percent,
      hasBar: total !== null && total !== undefined ? true : TRANSFER_KINDS.includes(action.kind),
      progressText: total ? bytes(done) + " of " + bytes(total) + " (" + percent + " %)" : (done ? bytes(done) : ""),
      speed: action.speed_bps !== null && action.speed_bps !== undefined ? bytes(action.speed_bps) + "/s" : "",
    };
  }

  function progressCell(view) {
    const a = view.action;
    if (!view.hasBar) return el("td", { class: "progress" });
    let bar;
    if (a.bytes_total) bar = el("progress", { max: a.bytes_total, value: a.bytes_done || 0 });
    else if (a.status === "running") bar = el("progress");
    else bar = el("progress", { max: 100, value: view.percent });
    return el("td", { class: "progress" }, bar, " ", el("span", { class: "progress-text" }, view.progressText));
  }

  function actionRow(view) {
    const a = view.action;
    const status = el("td", { class: "status" }, badge(a.status));
    if (a.status === "queued" && a.not_before) {
      status.appendChild(el("span", { class: "muted next" }, " next try " + when(a.not_before)));
    }
    const retry = a.status === "failed"
      ? el("button", { type: "button", class: "retry", "data-retry": a.id }, "Retry") : null;
    return el("tr", { class: "status-" + a.status },
      el("td", { class: "time" }, when(a.started_at)),
      el("td", { class: "id" }, a.id),
      el("td", { class: "kind" }, a.kind),
      el("td", { class: "file" }, view.file),
      el("td", { class: "target" }, a.target),
      status,
      progressCell(view),
      el("td", { class: "speed" }, view.speed),
      el("td", { class: "attempts" }, a.attempts),
      el("td", { class: "error" }, a.error),
      el("td", { class: "do" }, retry));
  }

  function eventRow(e) {
    return el("tr", { class: "status-" + e.status },
      el("td", { class: "time" }, when(e.received_at)),
      el("td", { class: "id" }, e.id),
      el("td", { class: "source" }, e.source),
      el("td", { class: "endpoint" }, e.endpoint),
      el("td", { class: "status" }, badge(e.status)),
      el("td", { class: "reason" }, e.reason),
      el("td", { class: "item" }, e.item_id ? "#" + e.item_id : ""));
  }

  function itemRow(i) {
    return el("tr", {},
      el("td", { class: "time" }, when(i.updated_at)),
      el("td", { class: "id" }, i.id),
      el("td", { class: "source" }, i.source),
      el("td", { class: "key" }, i.key),
      el("td", { class: "file" }, fileLabel(i)),
      el("td", { class: "state" }, badge(i.state)));
  }

  // Rows are kept by id: a row is rebuilt only when its data changed, and put in the API's order. What a row
  // was built from is kept here, not in the page: raw values may hold what  hides.
  const builtFrom = new WeakMap();

  function sync(tbody, rows, key, render, columns, emptyText) {
    const existing = new Map();
    for (const tr of Array.from(tbody.children)) {
      if (tr.dataset.id) existing.set(tr.dataset.id, tr);
      else tr.remove();
    }
    let previous = null;
    for (const row of rows) {
      const id = String(key(row));
      const signature = JSON.stringify(row);
      let tr = existing.get(id);
      existing.delete(id);
      if (!tr || builtFrom.get(tr) !== signature) {
        const fresh = render(row);
        fresh.dataset.id = id;
        builtFrom.set(fresh, signature);
        if (tr) tr.replaceWith(fresh);
        tr = fresh;
      }
      const wanted = previous ? previous.nextSibling : tbody.firstChild;
      if (wanted !== tr) tbody.insertBefore(tr, wanted);
      previous = tr;
    }
    existing.forEach((tr) => tr.remove());
    if (!rows.length) tbody.appendChild(el("tr", { class: "empty" }, el("td", { colspan: columns }, emptyText)));
  }

  // --- talking to the API -------------------------------------------------------------------------------

  class SessionEnded extends Error {}

  async function getJson(path) {
    const answer = await fetch(API + path, {
      credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" },
    });
    if (answer.status === 401 || answer.status === 403) throw new SessionEnded("session ended");
    if (!answer.ok) throw new Error("HTTP " + answer.status + " from " + path);
    return answer.json();
  }

  async function learnLabels(actionList) {
    const missing = [...new Set(actionList.map((a) => a.item_id))].filter((id) => id && !labels.has(id));
    await Promise.all(missing.map(async (id) => {
      try {
        labels.set(id, fileLabel(await getJson("/items/" + encodeURIComponent(id))));
      } catch (error) {
        if (error instanceof SessionEnded) throw error;
        labels.set(id, "#" + id);
      }
    }));
  }

  const notice = document.getElementById("notice");
  const updated = document.getElementById("updated");
  let problemShown = false;
  let timer = null;
  let busy = false;
  let stopped = false;
  let polls = 0;

  function say(message, isError) {
    notice.textContent = message;
    notice.className = "notice" + (isError ? " error" : "");
    notice.hidden = false;
  }

  async function poll() {
    if (busy || stopped) return;
    busy = true;
    clearTimeout(timer);
    try {
      if (!document.hidden) {
        const [actionPage, eventPage, itemPage] = await Promise.all([
          getJson("/actions?limit=" + ROWS), getJson("/events?limit=" + ROWS), getJson("/items?limit=" + ROWS),
        ]);
        for (const item of itemPage.items) labels.set(item.id, fileLabel(item));
        await learnLabels(actionPage.items);
        sync(document.getElementById("actions-body"), actionPage.items.map(transferView), (v) => v.action.id,
          actionRow, 11, "No actions yet.");
        sync(document.getElementById("events-body"), eventPage.items, (e) => e.id, eventRow, 7, "No calls yet.");
        sync(document.getElementById("items-body"), itemPage.items, (i) => i.id, itemRow, 6, "No items yet.");
        updated.textContent = "updated " + when(new Date().toISOString()) + " UTC";
        polls += 1;
        body.dataset.polls = String(polls);
        if (problemShown) {
          notice.hidden = true;
          problemShown = false;
        }
      }
    } catch (error) {
      if (error instanceof SessionEnded) {
        stopped = true;
        say("Your session has ended (the admin token may have changed). Reload the page to log in again.", true);
      } else {
        problemShown = true;
        say("Cannot reach the listener (" + error.message + "); trying again.", true);
      }
    } finally {
      busy = false;
      if (!stopped) timer = setTimeout(poll, POLL_MS);
    }
  }

  async function retry(button) {
    const id = button.dataset.retry;
    button.disabled = true;
    button.textContent = "Retrying…";
    let message;
    let ok = false;
    try {
      const answer = await fetch(API + "/actions/" + encodeURIComponent(id) + "/retry", {
        method: "POST", credentials: "same-origin", cache: "no-store",
        headers: { Accept: "application/json", [CSRF_HEADER]: "1" },
      });
      const data = await answer.json().catch(() => ({}));
      ok = answer.ok;
      message = ok ? "Action " + id + " is queued again." : "Action " + id + " was not retried: "
        + (data.message || "HTTP " + answer.status);
    } catch (error) {
      message = "Action " + id + " was not retried: " + error.message;
    }
    say(message, !ok);
    if (!ok) {
      button.disabled = false;
      button.textContent = "Retry";
    }
    poll();
  }

  document.getElementById("actions-body").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-retry]");
    if (button && !button.disabled) retry(button);
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) poll();
  });
  poll();
})();
