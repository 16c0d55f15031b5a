// app.js - the chat sample page: one WebSocket to /chat, the room it is
// in, its members and its messages.  What people write only ever reaches
// the page as textContent.
"use strict";

(() => {
  const MAX_LOG_ENTRIES = 1000;  // oldest entries are dropped past this
  const LEAVE_REASON = "Leaving";

  const $ = (id) => document.getElementById(id);
  const stateLabel = $("state");
  const nameInput = $("name");
  const roomInput = $("room");
  const joinButton = $("join");
  const leaveButton = $("leave");
  const roomTitle = $("room-title");
  const countLabel = $("count");
  const memberList = $("members");
  const log = $("log");
  const logEmpty = $("log-empty");
  const messageInput = $("message");
  const sendButton = $("send");

  let socket = null;
  let failed = false;    // an error event came before this socket's close
  let pendingJoin = null; // {name, room} to send once the socket opens
  let me = null;         // {name, room} the server gave us
  const members = new Set();

  // ---------------------------------------------------------------- state

  function chatUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/chat`;
  }

  // kind: ready | connecting | open | closing | closed | error
  function showState(kind, text) {
    stateLabel.dataset.state = kind;
    stateLabel.textContent = text;
    const open = socket !== null && socket.readyState === WebSocket.OPEN;
    const idle = socket === null || socket.readyState === WebSocket.CLOSED;
    joinButton.disabled = !(idle || open);
    joinButton.textContent = me ? "Switch room" : "Join";
    leaveButton.disabled = !open;
    messageInput.disabled = !(open && me);
    sendButton.disabled = !(open && me);
  }

  function plural(n, one, many) {
    return `${n.toLocaleString("en-US")} ${n === 1 ? one : many}`;
  }

  function showRoom(count) {
    roomTitle.textContent = me ? `Room: ${me.room}` : "Not in a room";
    countLabel.textContent = me ? `${plural(count, "person", "people")} here`
      : "";
    countLabel.dataset.count = me ? String(count) : "";
    const items = Array.from(members).sort().map((name) => {
      const item = document.createElement("li");
      item.textContent = name;
      if (me && name === me.name) item.dataset.me = "true";
      return item;
    });
    memberList.replaceChildren(...items);
  }

  // ------------------------------------------------------------------ log

  function clock(date) {
    const pad = (n) => String(n).padStart(2, "0");
    return `${pad(date.getHours())}:${pad(date.getMinutes())}:` +
      pad(date.getSeconds());
  }

  // One log entry: a time, then who spoke (for messages) and the text.
  // kind: message | notice | error.  Every string goes in as textContent.
  function addEntry(kind, text, who) {
    const stick = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
    const now = new Date();

    const entry = document.createElement("li");
    entry.className = "entry";
    entry.dataset.kind = kind;

    const time = document.createElement("time");
    time.className = "when";
    time.dateTime = now.toISOString();
    time.textContent = clock(now);
    entry.append(time);

    if (who !== undefined) {
      const name = document.createElement("span");
      name.className = "who";
      name.textContent = who;
      entry.append(name);
      if (me && who === me.name) entry.dataset.mine = "true";
    }
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    entry.append(body);

    log.append(entry);
    while (log.childElementCount > MAX_LOG_ENTRIES) {
      log.firstElementChild.remove();
    }
    logEmpty.hidden = true;
    if (stick) log.scrollTop = log.scrollHeight;
    return entry;
  }

  function clearLog() {
    log.replaceChildren();
    logEmpty.hidden = false;
  }

  // ------------------------------------------------------- server events

  const handlers = {
    welcome(event) {
      me = { name: event.name, room: event.room };
      members.clear();
      for (const name of event.members) members.add(name);
      clearLog();
      addEntry("notice", `You joined ${event.room} as ${event.name}`);
      showRoom(event.count);
      showState("open", `In ${event.room}`);
      messageInput.focus();
    },
    joined(event) {
      members.add(event.name);
      addEntry("notice", `${event.name} joined`);
      showRoom(event.count);
    },
    left(event) {
      members.delete(event.name);
      addEntry("notice", `${event.name} left`);
      showRoom(event.count);
    },
    message(event) {
      addEntry("message", event.text, event.name);
    },
    error(event) {
      addEntry("error", event.error);
    },
  };

  function onMessage(event) {
    if (event.target !== socket) return;
    let data;
    try {
      data = JSON.parse(event.data);
    } catch (err) {
      addEntry("error", `The server sent something that is not JSON: ` +
        err.message);
      return;
    }
    const handle = Object.hasOwn(handlers, data?.type) ?
      handlers[data.type] : null;
    if (handle) handle(data);
    else addEntry("error", "The server sent an unknown message");
  }

  // ------------------------------------------------------------ the socket

  function sendJson(value) {
    socket.send(JSON.stringify(value));
  }

  function connect() {
    failed = false;
    me = null;
    socket = new WebSocket(chatUrl());
    socket.addEventListener("open", onOpen);
    socket.addEventListener("message", onMessage);
    socket.addEventListener("error", onError);
    socket.addEventListener("close", onClose);
    showState("connecting", "Connecting…");
  }

  function onOpen(event) {
    if (event.target !== socket) return;
    showState("open", "Connected");
    if (pendingJoin) sendJson({ type: "join", ...pendingJoin });
    pendingJoin = null;
  }

  function onError(event) {
    if (event.target !== socket) return;
    // Browsers tell scripts nothing more about a failed socket.
    failed = true;
  }

  function onClose(event) {
    if (event.target !== socket) return;
    const label = `(code ${event.code}${event.reason ? ": " : ""}` +
      `${event.reason})`;
    const where = me ? `You left ${me.room}` : "Disconnected";
    me = null;
    pendingJoin = null;
    members.clear();
    showRoom(0);
    addEntry(failed ? "error" : "notice", `${where} ${label}`);
    if (failed) showState("error", `Error ${label}`);
    else showState("closed", `Closed ${label}`);
  }

  function join() {
    const wanted = {
      name: nameInput.value.trim(),
      room: roomInput.value.trim(),
    };
    if (!wanted.name || !wanted.room) {
      addEntry("error", "Pick a name and a room first");
      return;
    }
    if (socket !== null && socket.readyState === WebSocket.OPEN) {
      sendJson({ type: "join", ...wanted });
    } else if (socket === null || socket.readyState === WebSocket.CLOSED) {
      pendingJoin = wanted;
      connect();
    }
  }

  function leave() {
    if (socket === null || socket.readyState !== WebSocket.OPEN) return;
    socket.close(1000, LEAVE_REASON);
    showState("closing", "Leaving…");
  }

  function say() {
    const text = messageInput.value;
    if (socket === null || socket.readyState !== WebSocket.OPEN || !me ||
        text.trim() === "") return;
    sendJson({ type: "say", text });
    messageInput.value = "";
    messageInput.focus();
  }

  // ---------------------------------------------------------------- wiring

  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    join();
  });
  $("say-form").addEventListener("submit", (event) => {
    event.preventDefault();
    say();
  });
  leaveButton.addEventListener("click", leave);

  showRoom(0);
  showState("ready", "Not connected");
})();
