// app.js - the chat sample page: one WebSocket to /chat, the room it is
// in, who is here and its messages.  What people write only ever reaches
// the page as textContent.
//
// Every message of the room comes as "<epoch>:<offset> <JSON>": its
// position in the room.  The page keeps the last one; when the
// connection is lost (not closed by Leave or by the server's refusal),
// it connects again after a back-off (0.5 s, doubling to 10 s, or as
// soon as the browser is online again) and joins with that position:
// the server sends exactly what was missed, in order, before its
// welcome, and the page shows it marked as recovered.  Positions are
// checked as they come: each must be the one after the last.
//
// "Disconnect network" asks the server to cut this socket off without
// a close frame ({"type":"drop"}, ws:abort() there): a page cannot drop
// its own TCP connection, and this way both ends see what a network
// failure does (close code 1006, a lost connection).
"use strict";

(() => {
  const MAX_LOG_ENTRIES = 1000;  // oldest entries are dropped past this
  const LEAVE_REASON = "Leaving";
  const RETRY_FIRST = 500;       // ms before the first reconnect
  const RETRY_MAX = 10_000;      // ms, the longest wait between tries
  // Closes after which the page comes back: a lost connection (1006,
  // the only code a close without a close frame gives), or a server
  // going away, failing or restarting.
  const COME_BACK = new Set([1001, 1006, 1011, 1012, 1013, 1014]);
  const ENVELOPE = /^([0-9a-f]{16}):(\d+) /;

  const $ = (id) => document.getElementById(id);
  const stateLabel = $("state");
  const nameInput = $("name");
  const roomInput = $("room");
  const joinButton = $("join");
  const leaveButton = $("leave");
  const dropButton = $("drop");
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
  let leaving = false;   // Leave was pressed: no coming back
  let position = null;   // the room's last position seen, "epoch:offset"
  let resume = null;     // {name, room, since} while coming back
  let recovering = null; // {messages, entries} between the join with
                         // since and its welcome: what comes is missed
  let retries = 0;       // reconnects tried since the connection was lost
  let retryTimer = null;
  let waitingOnline = false;
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
    leaveButton.disabled = !(open || resume);
    dropButton.disabled = !(open && me);
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
      if (who === (me ?? resume)?.name) entry.dataset.mine = "true";
    }
    if (recovering) {
      entry.dataset.recovered = "true";
      entry.title = "Missed while disconnected, recovered";
      recovering.entries++;
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
      const back = recovering;
      recovering = null;
      resume = null;
      retries = 0;
      me = { name: event.name, room: event.room };
      position = event.position;
      members.clear();
      for (const name of event.members) members.add(name);
      if (!back) {
        clearLog();
        addEntry("notice", `You joined ${event.room} as ${event.name}`);
      } else if (event.recovered) {
        addEntry("notice", `Back in ${event.room}: ` +
          `${plural(back.messages, "missed message", "missed messages")}` +
          " recovered");
      } else {
        addEntry("error", `Back in ${event.room}, but what was said ` +
          "while you were away could not be recovered");
      }
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
      if (recovering) recovering.messages++;
      addEntry("message", event.text, event.name);
    },
    error(event) {
      const refused = recovering !== null;  // the join to come back
      if (refused) {
        recovering = null;
        resume = null;
        retries = 0;
      }
      addEntry("error", event.error);
      if (refused) showState("open", "Connected");
    },
  };

  // A room message's position: it must follow the last one seen.
  function advance(epoch, offset) {
    const [lastEpoch, lastOffset] = position ? position.split(":") : [];
    if (lastEpoch === epoch && Number(lastOffset) + 1 !== Number(offset)) {
      addEntry("error", `Messages missing or repeated: position ${offset} ` +
        `came after ${lastOffset}`);
    }
    position = `${epoch}:${offset}`;
  }

  function onMessage(event) {
    if (event.target !== socket) return;
    let text = event.data;
    const envelope = ENVELOPE.exec(text);
    if (envelope) {
      advance(envelope[1], envelope[2]);
      text = text.slice(envelope[0].length);
    }
    let data;
    try {
      data = JSON.parse(text);
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
    leaving = false;
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
    if (resume) {
      showState("open", `Rejoining ${resume.room}…`);
      recovering = { messages: 0, entries: 0 };
      sendJson({ type: "join", ...resume });
      return;
    }
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
    const lost = !leaving && COME_BACK.has(event.code) && (me || resume);
    if (lost) {
      if (!resume) {
        addEntry("error", `Connection lost ${label}`);
        resume = { name: me.name, room: me.room, since: position };
      } else {
        resume.since = position;  // lost again while catching up
      }
      me = null;
      recovering = null;
      members.clear();
      showRoom(0);
      comeBack();
      return;
    }
    const where = me ? `You left ${me.room}` : "Disconnected";
    me = null;
    pendingJoin = null;
    members.clear();
    showRoom(0);
    addEntry(failed ? "error" : "notice", `${where} ${label}`);
    if (failed) showState("error", `Error ${label}`);
    else showState("closed", `Closed ${label}`);
  }

  // ------------------------------------------------------- coming back

  // The next try, after a back-off that doubles (with some jitter, so
  // that many pages cut off at once do not all come back at once), or
  // when the browser says it is online again.
  function comeBack() {
    const delay = Math.min(RETRY_FIRST * 2 ** retries, RETRY_MAX) *
      (0.75 + Math.random() / 4);
    retries++;
    showState("connecting",
      `Reconnecting in ${(delay / 1000).toFixed(1)} s…`);
    retryTimer = setTimeout(tryAgain, delay);
  }

  function tryAgain() {
    retryTimer = null;
    if (navigator.onLine) {
      connect();
      return;
    }
    waitingOnline = true;
    showState("connecting", "Offline: waiting for the network…");
  }

  function stopComingBack() {
    clearTimeout(retryTimer);
    retryTimer = null;
    waitingOnline = false;
    resume = null;
    recovering = null;
    retries = 0;
  }

  window.addEventListener("online", () => {
    if (!waitingOnline) return;
    waitingOnline = false;
    connect();
  });

  function join() {
    const wanted = {
      name: nameInput.value.trim(),
      room: roomInput.value.trim(),
    };
    if (!wanted.name || !wanted.room) {
      addEntry("error", "Pick a name and a room first");
      return;
    }
    if (resume && socket.readyState === WebSocket.CLOSED) {
      stopComingBack();     // a fresh join instead
      position = null;
    }
    if (socket !== null && socket.readyState === WebSocket.OPEN) {
      sendJson({ type: "join", ...wanted });
    } else if (socket === null || socket.readyState === WebSocket.CLOSED) {
      pendingJoin = wanted;
      connect();
    }
  }

  function leave() {
    if (resume && socket.readyState !== WebSocket.OPEN) {
      const room = resume.room;
      stopComingBack();
      if (socket.readyState !== WebSocket.CLOSED) {
        leaving = true;     // a try under way: its close is the end
        socket.close(1000, LEAVE_REASON);
        showState("closing", "Leaving…");
        return;
      }
      addEntry("notice", `You left ${room}`);
      showState("closed", "Closed");
      return;
    }
    if (socket === null || socket.readyState !== WebSocket.OPEN) return;
    leaving = true;
    stopComingBack();
    socket.close(1000, LEAVE_REASON);
    showState("closing", "Leaving…");
  }

  // "Disconnect network": the server cuts this socket off (see the top).
  function dropConnection() {
    if (socket === null || socket.readyState !== WebSocket.OPEN || !me) {
      return;
    }
    sendJson({ type: "drop" });
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
  dropButton.addEventListener("click", dropConnection);

  showRoom(0);
  showState("ready", "Not connected");
})();
