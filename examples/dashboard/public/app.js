// app.js - the dashboard sample page: one WebSocket to /live, the latest
// figures of each server process, their sums over the last 60 seconds
// drawn on two canvases.
"use strict";

(() => {
  const HISTORY = 60;        // seconds shown
  const STALE = 3000;        // ms: a worker not heard from this long is gone
  const RETRY = 2000;        // ms before reconnecting

  const $ = (id) => document.getElementById(id);
  const stateLabel = $("state");
  const bump = $("bump");
  const liveChart = $("live-chart");
  const totalChart = $("total-chart");

  const latest = new Map();  // worker -> { figures, at }
  const history = [];        // one { connections, rate, messages } a second
  let socket = null;

  function liveUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/live`;
  }

  function showState(kind, text) {
    stateLabel.dataset.state = kind;
    stateLabel.textContent = text;
    bump.disabled = kind !== "open";
  }

  // ------------------------------------------------------------- figures

  // The sums of the latest figures of the workers heard from lately.
  function totals() {
    const now = Date.now();
    const sum = { connections: 0, rate: 0, messages: 0, workers: 0 };
    for (const [worker, { figures, at }] of latest) {
      if (now - at > STALE) {
        latest.delete(worker);
        continue;
      }
      sum.connections += figures.connections;
      sum.rate += figures.rate;
      sum.messages += figures.messages;
      sum.workers += 1;
    }
    sum.rate = Math.round(sum.rate * 10) / 10;
    return sum;
  }

  function showFigures(sum) {
    for (const name of ["connections", "rate", "messages", "workers"]) {
      const cell = $(name);
      cell.textContent = sum.workers ? sum[name].toLocaleString("en-US")
        : "–";
      cell.dataset.value = sum.workers ? String(sum[name]) : "";
    }
  }

  // -------------------------------------------------------------- charts

  function color(name) {
    return getComputedStyle(document.documentElement)
      .getPropertyValue(`--${name}`).trim();
  }

  // A round step for the y axis: 1, 2 or 5 times a power of ten.
  function niceMax(value) {
    if (value <= 4) return 4;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 5, 10]) {
      if (step * power >= value) return step * power;
    }
    return 10 * power;
  }

  // Draws each of series ([{ key, color }]) from history on canvas: the
  // oldest second at the left, now at the right, a shared y axis from 0.
  function drawChart(canvas, series) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || canvas.width;
    const height = Math.round(width * canvas.height / canvas.width) ||
      canvas.height;
    if (canvas.width !== Math.round(width * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);

    const left = 48, right = 18, top = 8, bottom = 20;
    const plotW = width - left - right, plotH = height - top - bottom;
    let max = 0;
    for (const point of history) {
      for (const { key } of series) max = Math.max(max, point[key]);
    }
    max = niceMax(max);
    const x = (i) => left + plotW * (i + HISTORY - history.length) /
      (HISTORY - 1);
    const y = (v) => top + plotH * (1 - v / max);

    // grid and labels: four steps up, a line every 10 s
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = color("muted");
    g.strokeStyle = color("grid");
    g.lineWidth = 1;
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (let step = 0; step <= 4; step++) {
      const value = max * step / 4;
      const at = Math.round(y(value)) + 0.5;
      g.beginPath();
      g.moveTo(left, at);
      g.lineTo(left + plotW, at);
      g.stroke();
      g.fillText(value.toLocaleString("en-US"), left - 6, at);
    }
    g.textAlign = "center";
    g.textBaseline = "top";
    for (let ago = HISTORY; ago >= 0; ago -= 10) {
      const at = left + plotW * (HISTORY - ago) / HISTORY;
      g.fillText(ago ? `-${ago}s` : "now", at, top + plotH + 4);
    }

    g.lineWidth = 2;
    g.lineJoin = "round";
    for (const { key, color: name } of series) {
      g.strokeStyle = color(name);
      g.beginPath();
      history.forEach((point, i) => {
        if (i === 0) g.moveTo(x(i), y(point[key]));
        else g.lineTo(x(i), y(point[key]));
      });
      if (history.length === 1) g.lineTo(x(0) - 2, y(history[0][key]));
      g.stroke();
    }
  }

  function draw() {
    drawChart(liveChart, [{ key: "connections", color: "connections" },
      { key: "rate", color: "rate" }]);
    drawChart(totalChart, [{ key: "messages", color: "messages" }]);
  }

  // Once a second: the sums join the history, and the charts move on.
  setInterval(() => {
    const sum = totals();
    showFigures(sum);
    if (sum.workers) {
      history.push(sum);
      if (history.length > HISTORY) history.shift();
    }
    draw();
  }, 1000);
  window.addEventListener("resize", draw);
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change",
    draw);

  // -------------------------------------------------------------- socket

  function connect() {
    showState("connecting", "Connecting");
    socket = new WebSocket(liveUrl());
    socket.onopen = () => showState("open", "Live");
    socket.onmessage = (event) => {
      let figures;
      try {
        figures = JSON.parse(event.data);
      } catch {
        return;
      }
      if (figures.type !== "figures") return;
      latest.set(figures.worker, { figures, at: Date.now() });
      showFigures(totals());
    };
    socket.onclose = (event) => {
      socket = null;
      showState("closed", `Closed (code ${event.code}); reconnecting`);
      setTimeout(connect, RETRY);
    };
  }

  bump.addEventListener("click", () => {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send("bump");
  });

  draw();
  connect();
})();
