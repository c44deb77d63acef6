/**
 * demo.js: the demo chat page at "/". Plain DOM over chat.js and resumable.js.
 *
 * URL parameters: chat (the conversation; generated when missing, so a reload or a second tab with
 * the same URL shows the same chat), transport (auto | ws | sse), heartbeat (ping period in ms),
 * rate (the simulated model's tokens per second), token (a JWT when the hub has auth on).
 */

import { openChat, newChatId, isStreaming } from "/static/chat.js";  // the browser library, served at /static/ by every hub
import { connect } from "/static/resumable.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const CHAT_ID = /^[A-Za-z0-9_-]{1,64}$/;

let chatId = params.get("chat");
if (!chatId || !CHAT_ID.test(chatId)) {
  chatId = newChatId();
  params.delete("new");
  params.set("chat", chatId);
  history.replaceState(null, "", `${location.pathname}?${params}`);
}

const options = { transport: params.get("transport") || "auto", token: params.get("token") };
const heartbeat = Number(params.get("heartbeat"));
if (heartbeat > 0) Object.assign(options, { heartbeatMs: heartbeat, heartbeatTimeoutMs: heartbeat });
const client = connect("/ws", options);
const chat = openChat(client, chatId, { rate: Number(params.get("rate")) || null });
window.demo = { client, chat }; // for the browser tests and for poking around in the console

const log = $("log");
const views = new Map(); // stream id -> {turn, text (a Text node), shown, meta, prompt}

$("chat-id").textContent = chatId;
$("chat-link").href = location.href;
$("chat-link").addEventListener("click", (e) => {
  e.preventDefault();
  navigator.clipboard?.writeText(location.href).catch(() => {});
  window.open(location.href, "_blank");
});

const STATE_TEXT = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", closed: "Disconnected" };
client.onState((state, transport) => {
  $("conn").dataset.state = state;
  $("conn-text").textContent = STATE_TEXT[state] || state;
  $("transport").textContent = `transport: ${transport === "sse" ? "Server-Sent Events" : "WebSocket"}`;
});

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function viewFor(m) {
  let v = views.get(m.stream);
  if (v) return v;
  const turn = el("article", "turn");
  turn.dataset.stream = m.stream;
  const user = el("div", "msg user");
  const bubble = el("div", "bubble", m.prompt ?? "(question not available)");
  user.append(bubble);
  const answer = el("div", "msg assistant");
  answer.dataset.stream = m.stream;
  const body = el("div", "body");
  const textEl = el("span", "msg-text");
  const caret = el("span", "caret");
  const meta = el("div", "meta");
  body.append(textEl, caret, meta);
  answer.append(el("div", "avatar", "AI"), body);
  turn.append(user, answer);
  v = { turn, answer, bubble, textEl, shown: "", meta };
  views.set(m.stream, v);
  return v;
}

/**
 * Light markdown styling that keeps every character: the element's textContent stays exactly the
 * stream's text (the tests compare it), only headings, list marks and code get their own spans.
 */
function markdownish(text) {
  const out = document.createDocumentFragment();
  let code = false;
  for (const line of text.match(/[^\n]*\n?/g)) {
    if (!line) continue;
    if (line.startsWith("```")) {
      code = !code;
      out.append(el("span", "md-fence", line));
    } else if (code) {
      out.append(el("span", "md-code", line));
    } else if (/^#{1,6} /.test(line)) {
      const mark = line.indexOf(" ") + 1;
      out.append(el("span", "md-mark", line.slice(0, mark)), el("span", "md-h", line.slice(mark)));
    } else if (/^[-*] /.test(line)) {
      out.append(el("span", "md-bullet", line.slice(0, 2)), line.slice(2));
    } else {
      out.append(line);
    }
  }
  return out;
}

function render() {
  const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  $("empty").hidden = chat.status === "loading" || chat.messages.length > 0;
  let prev = $("empty");
  for (const m of chat.messages) {
    const v = viewFor(m);
    if (prev.nextSibling !== v.turn) prev.after(v.turn); // keeps the DOM in the chat's order
    prev = v.turn;
    if (m.prompt && v.bubble.textContent !== m.prompt) v.bubble.textContent = m.prompt;
    if (m.text !== v.shown) {
      v.textEl.replaceChildren(markdownish(m.text));
      v.shown = m.text;
    }
    v.answer.dataset.status = m.status;
    v.answer.dataset.offset = String(m.offset);
    const label = m.status === "connecting" ? "waiting" : m.status;
    v.meta.replaceChildren(el("span", `badge ${m.status}`, label), el("span", "", `${m.offset} chunks`));
    if (m.error) v.meta.append(el("span", "", m.error));
  }
  const live = chat.messages.filter((m) => isStreaming(m.status));
  $("streaming").hidden = live.length === 0;
  $("streaming-offset").textContent = live.length ? `${live[live.length - 1].offset} chunks` : "";
  $("stop").hidden = live.length === 0;
  $("send").hidden = live.length > 0;
  const st = client.stats;
  $("stats").textContent = `reconnects: ${st.reconnects} · duplicates dropped: ${st.duplicatesDropped}`;
  document.body.dataset.chatStatus = chat.status;
  if (nearBottom) log.scrollTop = log.scrollHeight;
}

let frame = 0;
chat.onChange(() => {
  // one paint per animation frame however many chunks arrive (and at once in a hidden tab)
  if (frame) return;
  frame = document.visibilityState === "hidden" ? setTimeout(flush, 100) : requestAnimationFrame(flush);
});
function flush() {
  frame = 0;
  render();
}
render();

async function send(prompt) {
  prompt = prompt.trim();
  if (!prompt) return;
  $("send").disabled = true;
  try {
    await chat.ask(prompt);
    $("prompt").value = "";
    autosize();
  } catch (e) {
    alert(`Could not start an answer: ${e.message}`);
  } finally {
    $("send").disabled = false;
    $("prompt").focus();
  }
}

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  if ($("stop").hidden) send($("prompt").value);
});
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});
function autosize() {
  const t = $("prompt");
  t.style.height = "auto";
  t.style.height = `${Math.min(t.scrollHeight, 160)}px`;
}
$("prompt").addEventListener("input", autosize);
$("stop").addEventListener("click", () => chat.stop());
for (const b of document.querySelectorAll(".suggestion")) b.addEventListener("click", () => send(b.textContent));
