// app.js - the game sample page: one WebSocket to /play, the keys held
// sent as a direction when they change, the state of every tick drawn on
// the canvas.
"use strict";

(() => {
  const RADIUS = 8;          // px of a dot, in world units
  const KEYS = {             // key -> [dx, dy]
    ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1],
    ArrowDown: [0, 1], a: [-1, 0], d: [1, 0], w: [0, -1], s: [0, 1],
  };

  const $ = (id) => document.getElementById(id);
  const stateLabel = $("state");
  const field = $("field");
  const meLabel = $("me");
  const playersLabel = $("players");
  const playButton = $("play");

  let socket = null;
  let me = null;             // the welcome: id, width, height, rate, idle
  let players = [];          // the latest state's players
  const held = new Set();    // keys down
  let sent = "0,0";          // the direction last sent

  function showState(kind, text) {
    stateLabel.dataset.state = kind;
    stateLabel.textContent = text;
    playButton.hidden = kind !== "closed";
  }

  function color(name) {
    return getComputedStyle(document.documentElement)
      .getPropertyValue(`--${name}`).trim();
  }

  // ---------------------------------------------------------------- draw

  function draw() {
    const g = field.getContext("2d");
    const width = me ? me.width : field.width;
    const height = me ? me.height : field.height;
    if (field.width !== width || field.height !== height) {
      field.width = width;
      field.height = height;
    }
    g.fillStyle = color("field");
    g.fillRect(0, 0, width, height);
    g.strokeStyle = color("grid");
    g.lineWidth = 1;
    g.beginPath();
    for (let x = 40; x < width; x += 40) {
      g.moveTo(x + 0.5, 0);
      g.lineTo(x + 0.5, height);
    }
    for (let y = 40; y < height; y += 40) {
      g.moveTo(0, y + 0.5);
      g.lineTo(width, y + 0.5);
    }
    g.stroke();
    // mine last, so it is on top
    const mine = players.filter((p) => me && p.id === me.id);
    for (const p of players.filter((q) => !me || q.id !== me.id)
      .concat(mine)) {
      g.fillStyle = color(me && p.id === me.id ? "me" : "other");
      g.beginPath();
      g.arc(p.x, p.y, RADIUS, 0, 2 * Math.PI);
      g.fill();
    }
  }

  function showPlayers() {
    const mine = me && players.find((p) => p.id === me.id);
    if (mine) {
      meLabel.textContent = `You: ${mine.x}, ${mine.y}`;
      meLabel.dataset.x = String(mine.x);
      meLabel.dataset.y = String(mine.y);
    }
    const n = players.length;
    playersLabel.textContent = `${n} ${n === 1 ? "player" : "players"}`;
    playersLabel.dataset.count = String(n);
  }

  // --------------------------------------------------------------- input

  // The direction of the keys held, each axis -1, 0 or 1.
  function direction() {
    let dx = 0, dy = 0;
    for (const key of held) {
      dx += KEYS[key][0];
      dy += KEYS[key][1];
    }
    return [Math.sign(dx), Math.sign(dy)];
  }

  function sendDirection() {
    const [dx, dy] = direction();
    if (`${dx},${dy}` === sent) return;
    if (!socket || socket.readyState !== WebSocket.OPEN || !me) return;
    sent = `${dx},${dy}`;
    socket.send(JSON.stringify({ type: "input", dx, dy }));
  }

  function keyName(event) {
    return event.key.length === 1 ? event.key.toLowerCase() : event.key;
  }

  document.addEventListener("keydown", (event) => {
    const key = keyName(event);
    if (!(key in KEYS) || event.altKey || event.ctrlKey || event.metaKey) {
      return;
    }
    event.preventDefault();     // no scrolling with the arrows
    held.add(key);
    sendDirection();
  });
  document.addEventListener("keyup", (event) => {
    if (held.delete(keyName(event))) sendDirection();
  });
  window.addEventListener("blur", () => {
    held.clear();
    sendDirection();
  });

  // -------------------------------------------------------------- socket

  function connect() {
    showState("connecting", "Connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}/play`);
    sent = "0,0";
    socket.onopen = () => showState("open", "Playing");
    socket.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === "welcome") {
        me = message;
        meLabel.dataset.id = String(me.id);
        sendDirection();        // keys held while it connected
      } else if (message.type === "state") {
        players = message.players;
        showPlayers();
        draw();
      }
    };
    socket.onclose = (event) => {
      socket = null;
      players = players.filter((p) => !me || p.id !== me.id);
      draw();
      meLabel.textContent = "Not playing";
      delete meLabel.dataset.x;
      delete meLabel.dataset.y;
      const why = event.code === 4000 ? "idle for too long" :
        event.reason || "connection lost";
      showState("closed", `Closed (code ${event.code}: ${why})`);
    };
  }

  playButton.addEventListener("click", () => {
    field.focus();
    connect();
  });

  draw();
  connect();
})();
