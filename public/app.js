// app.js - the echo sample page: one WebSocket, its state, and a log of
// every event.  Message data only ever reaches the page as textContent.
"use strict";

(() => {
  const PREVIEW_CHARS = 100;     // characters of a message shown in the log
  const MAX_LOG_ENTRIES = 1000;  // oldest entries are dropped past this
  const MAX_PENDING = 1000;      // sent messages awaiting their echo
  const CLOSE_REASON = "Closing from client";

  const $ = (id) => document.getElementById(id);
  const stateLabel = $("state");
  const urlInput = $("url");
  const connectButton = $("connect");
  const closeButton = $("close");
  const messageInput = $("message");
  const sendButton = $("send");
  const log = $("log");
  const logEmpty = $("log-empty");
  const utf8 = new TextEncoder();

  let socket = null;
  let opened = false;   // this socket reached the open state
  let failed = false;   // an error event came before this socket's close
  let sentClose = null; // {code, reason} of a close we started
  let pending = [];     // messages sent and not yet echoed: {text, sentAt}

  // ---------------------------------------------------------------- state

  function defaultUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host || "127.0.0.1:5000"}/ws`;
  }

  // kind: ready | connecting | open | closing | closed | error
  function showState(kind, text) {
    stateLabel.dataset.state = kind;
    stateLabel.textContent = text;
    const open = socket !== null && socket.readyState === WebSocket.OPEN;
    const idle = socket === null || socket.readyState === WebSocket.CLOSED;
    connectButton.disabled = !idle;
    urlInput.readOnly = !idle;
    sendButton.disabled = !open;
    closeButton.disabled = !open;
  }

  // ------------------------------------------------------------------ log

  function byteLength(text) {
    return utf8.encode(text).length;
  }

  function plural(n, word) {
    return `${n.toLocaleString("en-US")} ${word}${n === 1 ? "" : "s"}`;
  }

  // The first PREVIEW_CHARS characters, never splitting a surrogate pair,
  // then the total size when the message is longer than that.
  function preview(text, bytes) {
    if (text.length <= PREVIEW_CHARS) return text;
    let cut = PREVIEW_CHARS;
    const last = text.charCodeAt(cut - 1);
    if (last >= 0xd800 && last <= 0xdbff) cut -= 1;
    return `${text.slice(0, cut)}… (${plural(bytes, "byte")})`;
  }

  function clock(date) {
    const pad = (n, width = 2) => String(n).padStart(width, "0");
    return `${pad(date.getHours())}:${pad(date.getMinutes())}:` +
      `${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
  }

  const KIND_LABELS = {
    open: "Open", send: "Sent", receive: "Received",
    close: "Closed", error: "Error",
  };

  // One log entry: a time, a kind badge, a summary line and optionally
  // the message text.  Every string goes in as textContent.
  function addEntry(kind, summary, body) {
    const stick = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
    const now = new Date();

    const entry = document.createElement("li");
    entry.className = "entry";
    entry.dataset.kind = kind;

    const time = document.createElement("time");
    time.className = "when";
    time.dateTime = now.toISOString();
    time.textContent = clock(now);

    const badge = document.createElement("span");
    badge.className = "kind";
    badge.textContent = KIND_LABELS[kind];

    const info = document.createElement("span");
    info.className = "summary";
    info.textContent = summary;

    entry.append(time, badge, info);
    if (body !== undefined) {
      const data = document.createElement("span");
      data.className = "data";
      data.textContent = body;
      entry.append(data);
    }

    log.append(entry);
    while (log.childElementCount > MAX_LOG_ENTRIES) {
      log.firstElementChild.remove();
    }
    logEmpty.hidden = true;
    if (stick) log.scrollTop = log.scrollHeight;
    return entry;
  }

  // ------------------------------------------------------------ the socket

  function connect() {
    const url = urlInput.value.trim();
    opened = false;
    failed = false;
    sentClose = null;
    pending = [];
    try {
      socket = new WebSocket(url);
    } catch (err) {
      // A malformed URL throws at once: no events will follow.
      socket = null;
      addEntry("error", `Cannot connect to ${url || "(empty URL)"}: ` +
        err.message);
      showState("error", "Error");
      return;
    }
    socket.binaryType = "arraybuffer";
    socket.addEventListener("open", onOpen);
    socket.addEventListener("message", onMessage);
    socket.addEventListener("error", onError);
    socket.addEventListener("close", onClose);
    showState("connecting", "Connecting…");
  }

  function onOpen(event) {
    const ws = event.target;
    if (ws !== socket) return;
    opened = true;
    const details = [];
    if (ws.protocol) details.push(`protocol ${ws.protocol}`);
    if (ws.extensions) details.push(`extensions ${ws.extensions}`);
    addEntry("open", `Connected to ${ws.url}` +
      (details.length ? ` (${details.join("; ")})` : ""));
    showState("open", "Open");
    messageInput.focus();
  }

  // An echo of ours is matched to the oldest pending message with the
  // same text (echoes come back in order), which gives its round trip.
  function takeRoundTrip(text) {
    const index = pending.findIndex((sent) => sent.text === text);
    if (index < 0) return null;
    const [sent] = pending.splice(index, 1);
    return performance.now() - sent.sentAt;
  }

  function onMessage(event) {
    if (event.target !== socket) return;
    const receivedAt = performance.now();
    if (typeof event.data === "string") {
      const text = event.data;
      const bytes = byteLength(text);
      const rtt = takeRoundTrip(text);
      const rttText = rtt === null ? "" : `, round trip ${rtt.toFixed(1)} ms`;
      const entry = addEntry("receive", `Text, ${plural(bytes, "byte")}` +
        rttText, preview(text, bytes));
      if (rtt !== null) entry.dataset.rtt = rtt.toFixed(1);
      window.__lastReceived =
        { kind: "text", data: text, bytes, rttMs: rtt, receivedAt };
    } else {
      const data = new Uint8Array(event.data);
      const hex = Array.from(data.subarray(0, 32),
        (b) => b.toString(16).padStart(2, "0")).join(" ");
      addEntry("receive", `Binary, ${plural(data.length, "byte")}`,
        data.length > 32 ? `${hex} …` : hex);
      window.__lastReceived = { kind: "binary", data: event.data,
        bytes: data.length, rttMs: null, receivedAt };
    }
  }

  function onError(event) {
    if (event.target !== socket) return;
    // Browsers tell scripts nothing more about a failed socket.
    failed = true;
    addEntry("error", opened
      ? `WebSocket error on ${event.target.url}`
      : `Could not connect to ${event.target.url}`);
    showState("error", "Error");
  }

  // The close event carries the server's close frame.  RFC 6455 5.5.1
  // has a reply echo the code but not necessarily the reason, so for a
  // close we started the log also shows what we sent.
  function onClose(event) {
    if (event.target !== socket) return;
    const reason = event.reason ? `: ${event.reason}` : "";
    const sent = sentClose
      ? `; we sent ${sentClose.code}: ${sentClose.reason}` : "";
    const entry = addEntry("close", `Code ${event.code}${reason}, ` +
      `wasClean ${event.wasClean}${sent}`);
    entry.dataset.code = String(event.code);
    entry.dataset.reason = event.reason;
    entry.dataset.wasClean = String(event.wasClean);
    if (sentClose) entry.dataset.sentReason = sentClose.reason;
    const shownReason = event.reason ||
      (sentClose && sentClose.code === event.code ? sentClose.reason : "");
    const label = `(code ${event.code}${shownReason ? ": " : ""}` +
      `${shownReason})`;
    if (failed) showState("error", `Error ${label}`);
    else showState("closed", `Closed ${label}`);
  }

  function send() {
    if (socket === null || socket.readyState !== WebSocket.OPEN) return;
    const text = messageInput.value;
    const bytes = byteLength(text);
    // A server that does not echo must not make this grow for ever.
    if (pending.length === MAX_PENDING) pending.shift();
    pending.push({ text, sentAt: performance.now() });
    socket.send(text);
    addEntry("send", `Text, ${plural(bytes, "byte")}`, preview(text, bytes));
    messageInput.value = "";
    messageInput.focus();
  }

  function close() {
    if (socket === null || socket.readyState !== WebSocket.OPEN) return;
    sentClose = { code: 1000, reason: CLOSE_REASON };
    socket.close(sentClose.code, sentClose.reason);
    showState("closing", "Closing…");
  }

  function clearLog() {
    log.replaceChildren();
    logEmpty.hidden = false;
  }

  // ---------------------------------------------------------------- wiring

  $("connect-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (!connectButton.disabled) connect();
  });
  $("send-form").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  closeButton.addEventListener("click", close);
  $("clear-log").addEventListener("click", clearLog);

  urlInput.value = defaultUrl();
  showState("ready", "Ready to connect…");
})();
