// The stagevox room page: Listen or Talk through the gateway's WebRTC bridge.
// The link is /room/NAME?token=TOKEN; everything the page shows comes from the
// gateway's JSON API and the status WebSocket of the person's session.
"use strict";

const $ = (id) => document.getElementById(id);
const room = decodeURIComponent((location.pathname.match(/^\/room\/([^/]+)/) || [])[1] || "");
const token = new URLSearchParams(location.search).get("token") || "";

// What a person is told for each error code of the gateway (or of the page).
const MESSAGES = {
  no_token: "This link has no token. Ask the room's host for a link (made with 'stagevox token').",
  malformed_token: "This link's token is not valid. Ask the room's host for a new link.",
  bad_signature: "This link's token was not issued by this room's server. Ask for a new link.",
  wrong_uid: "This link's token is not valid. Ask the room's host for a new link.",
  expired_token: "This link's token has expired. Ask the room's host for a new link.",
  wrong_channel: "This link's token is for another room.",
  no_publish_privilege: "This link lets you listen, not talk.",
  too_many_hosts: "The stage is full: the room has as many speakers as it allows. Listen for now and try again later.",
  channel_full: "The room is full. Try again later.",
  too_many_channels: "The server is serving as many rooms as it can. Try again later.",
  server_busy: "The server is busy. Try again in a moment.",
  rate_limited: "Too many attempts. Wait a few seconds and try again.",
  server_unreachable: "The gateway cannot reach the room's server. Try again later.",
  unreachable: "The gateway does not answer. Check your network, or that the gateway is running, and reload the page.",
  lost: "The connection to the gateway was lost. Press Listen or Talk to connect again.",
  no_microphone_permission: "No microphone permission: allow this page to use the microphone (the icon in the address bar), then press Talk again.",
  no_microphone: "No microphone was found. Connect one and press Talk again.",
  webrtc_failed: "The audio connection failed (WebRTC). Press Listen or Talk to try again.",
};

class PageError extends Error {
  constructor(code, detail) {
    super(detail || code);
    this.code = code;
  }
}

const page = { info: null, pc: null, session: null, ws: null, mode: null, muted: false,
               lossTimer: null, closing: false };

function showError(err) {
  const el = $("error");
  if (!err) { el.hidden = true; el.textContent = ""; return; }
  const text = MESSAGES[err.code] || "Something went wrong.";
  const detail = err.message && err.message !== err.code ? ` (${err.message})` : "";
  el.textContent = text + detail;
  el.dataset.code = err.code;
  el.hidden = false;
}

async function api(method, path, body) {
  let res;
  try {
    res = await fetch(path, {
      method,
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
  } catch (e) {
    throw new PageError("unreachable", "");
  }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new PageError(data.code || `http_${res.status}`, data.error || res.statusText);
  return data;
}

function setButtons() {
  const connected = page.session !== null;
  const info = page.info;
  $("listen").disabled = !info;
  $("talk").disabled = !info || !info.can_publish;
  $("listen").classList.toggle("active", page.mode === "listen");
  $("talk").classList.toggle("active", page.mode === "talk");
  $("leave").disabled = !connected;
  $("mute").disabled = !connected || page.mode !== "talk";
  $("preset").disabled = !connected || page.mode !== "talk";
  $("stage").hidden = !(info && info.can_publish);
  $("cleanup").parentElement.hidden = !(info && info.can_publish);
  $("stage").disabled = !connected;
}

function waitForIce(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 3000);   // use what was gathered by then
  });
}

// The browser's own voice cleanup (echo cancellation, noise suppression, gain
// control) unless the person turns it off (a clean microphone, music).
async function microphone(cleanup) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia)
    throw new PageError("no_microphone", "this page needs https or localhost for the microphone");
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: cleanup, noiseSuppression: cleanup, autoGainControl: cleanup },
    });
  } catch (e) {
    if (e.name === "NotAllowedError" || e.name === "SecurityError")
      throw new PageError("no_microphone_permission", e.message);
    throw new PageError("no_microphone", e.message);
  }
}

async function connect(mode) {
  showError(null);
  await disconnect();
  $("state").textContent = "connecting…";
  const pc = new RTCPeerConnection();
  page.pc = pc;
  // Pressing Listen or Talk again while this one connects replaces it.
  const replaced = () => page.pc !== pc;
  let session = null;
  try {
    if (mode === "talk") {
      const stream = await microphone($("cleanup").checked);
      stream.getTracks().forEach((t) => pc.addTrack(t, stream));
    } else {
      pc.addTransceiver("audio", { direction: "recvonly" });
    }
    pc.ontrack = (ev) => {
      const player = $("player");
      player.srcObject = ev.streams[0] || new MediaStream([ev.track]);
      player.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      if (!replaced() && pc.connectionState === "failed") {
        disconnect();
        showError(new PageError("webrtc_failed", ""));
      }
    };
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIce(pc);
    const answer = await api("POST", "/api/session",
                             { channel: room, token, mode, sdp: pc.localDescription.sdp });
    session = answer.id;
    if (replaced()) throw new PageError("replaced", "");
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    page.session = answer.id;
    page.mode = mode;
    openStatus(answer.id);
    const preset = $("preset").value;
    if (mode === "talk" && preset !== "off") send({ preset });
  } catch (err) {
    if (replaced()) {               // quietly end this one; the newer one goes on
      pc.getSenders().forEach((s) => s.track && s.track.stop());
      pc.close();
      if (session) api("DELETE", `/api/session/${session}`).catch(() => {});
      return;
    }
    await disconnect();
    showError(err instanceof PageError ? err : new PageError("webrtc_failed", String(err)));
  }
  setButtons();
}

async function disconnect() {
  const session = page.session;
  page.closing = true;
  if (page.ws) page.ws.close();
  if (page.pc) {
    page.pc.getSenders().forEach((s) => s.track && s.track.stop());
    page.pc.close();
  }
  clearInterval(page.lossTimer);
  Object.assign(page, { pc: null, session: null, ws: null, mode: null, muted: false,
                        lossTimer: null });
  if (session) await api("DELETE", `/api/session/${session}`).catch(() => {});
  page.closing = false;
  $("state").textContent = "not connected";
  $("role").textContent = "–";
  $("loss").textContent = "–";
  $("people").textContent = "";
  $("me-row").hidden = true;
  $("mute").setAttribute("aria-pressed", "false");
  $("mute").textContent = "Mute";
  renderSpeakers([]);
  setButtons();
}

function send(request) {
  if (page.ws && page.ws.readyState === WebSocket.OPEN) page.ws.send(JSON.stringify(request));
  else if (page.ws) page.ws.addEventListener("open", () => page.ws.send(JSON.stringify(request)),
                                             { once: true });
}

function openStatus(id) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/api/session/${id}/ws`);
  page.ws = ws;
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.error) showError(new PageError("request", msg.error));
    else render(msg);
  };
  ws.onclose = () => {
    if (ws === page.ws && !page.closing) {
      disconnect();
      showError(new PageError("lost", ""));
    }
  };
  page.lossTimer = setInterval(updateBrowserLoss, 1000);
}

let browserLoss = null;
async function updateBrowserLoss() {
  if (!page.pc) return;
  const stats = await page.pc.getStats();
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      const total = s.packetsReceived + s.packetsLost;
      browserLoss = total ? s.packetsLost / total : 0;
    }
  });
}

function pct(x) { return `${(100 * x).toFixed(1)} %`; }

function render(s) {
  $("state").textContent = `${s.mode === "talk" ? "talking" : "listening"} · channel ${s.channel_state} · audio ${s.webrtc_state}`;
  $("role").textContent = s.role === "host" ? "on stage (host)" : "audience";
  const parts = [];
  if (browserLoss !== null) parts.push(`to you ${pct(browserLoss)}`);
  if (s.mode === "talk") parts.push(`from you ${pct(s.uplink_loss)}`);
  $("loss").textContent = parts.join(" · ") || "–";
  $("stage").textContent = s.role === "host" ? "Leave stage" : "Go on stage";
  $("me-row").hidden = s.mode !== "talk";
  $("me-meter").style.width = meterWidth(s.muted ? -60 : s.level_db);
  renderSpeakers(s.speakers);
  $("people").textContent = s.people == null ? ""
    : `${s.people} in the room, ${s.speakers.length} on stage`;
}

function meterWidth(db) { return `${Math.max(0, Math.min(100, (db + 60) / 60 * 100))}%`; }

function renderSpeakers(speakers) {
  const list = $("speakers");
  list.replaceChildren();
  if (!speakers.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "nobody is speaking";
    list.append(li);
    return;
  }
  for (const sp of speakers) {
    const li = document.createElement("li");
    li.dataset.uid = sp.uid;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = `speaker ${sp.uid}`;
    const meter = document.createElement("span");
    meter.className = "meter";
    const bar = document.createElement("span");
    bar.style.width = meterWidth(sp.level_db);
    meter.append(bar);
    const loss = document.createElement("span");
    loss.className = "loss";
    loss.textContent = `loss ${pct(sp.loss)}`;
    li.append(who, meter, loss);
    list.append(li);
  }
}

async function start() {
  $("room-name").textContent = room ? `· ${room}` : "";
  $("listen").onclick = () => connect("listen");
  $("talk").onclick = () => connect("talk");
  $("leave").onclick = () => disconnect();
  $("mute").onclick = () => {
    page.muted = !page.muted;
    send({ mute: page.muted });
    $("mute").setAttribute("aria-pressed", String(page.muted));
    $("mute").textContent = page.muted ? "Unmute" : "Mute";
  };
  $("stage").onclick = () => {
    if (page.mode === "listen") connect("talk");            // on stage needs the microphone
    else send({ role: $("stage").textContent === "Leave stage" ? "audience" : "host" });
  };
  $("preset").onchange = () => send({ preset: $("preset").value });
  try {
    if (!room) throw new PageError("no_room", "");
    if (!token) throw new PageError("no_token", "");
    page.info = await api("GET", `/api/info?token=${encodeURIComponent(token)}`);
    if (page.info.channel !== room) throw new PageError("wrong_channel", "");
    $("who").textContent = `You are user ${page.info.uid}; this link lets you ` +
      (page.info.can_publish ? "listen and talk." : "listen.");
    for (const name of page.info.presets.filter((n) => n !== "off")) {
      const opt = document.createElement("option");
      opt.value = opt.textContent = name;
      $("preset").append(opt);
    }
  } catch (err) {
    page.info = null;
    $("who").textContent = "";
    showError(err);
  }
  setButtons();
}

MESSAGES.no_room = "Open a room's link: /room/NAME?token=TOKEN (the host makes it with 'stagevox token').";
start();
