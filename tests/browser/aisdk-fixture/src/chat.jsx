// A chat page on the real AI SDK: useChat({ resume: true }) over DefaultChatTransport or
// WebSocketChatTransport (?transport=ws), against the hub's AI SDK endpoints. The chat id comes
// from ?chat=, so a reload finds the same chat; earlier answers come from {api}/{chat}/messages.
import React, { useEffect, useRef, useState } from "react";
import { createRoot } from "react-dom/client";
import { useChat } from "@ai-sdk/react";
import { DefaultChatTransport, WebSocketChatTransport } from "ai";

const q = new URLSearchParams(location.search);
const chatId = q.get("chat");
const api = "/api/chat";

function makeTransport() {
  if (q.get("transport") === "ws") {
    return new WebSocketChatTransport({ url: `${location.origin.replace("http", "ws")}${api}/ws` });
  }
  return new DefaultChatTransport({ api });
}

function Chat({ initial }) {
  const [transport] = useState(makeTransport);
  const { messages, sendMessage, status, stop, error, resumeStream } = useChat({
    id: chatId,
    messages: initial,
    resume: true,
    transport,
  });
  const [input, setInput] = useState("");
  window.__status = status;
  // The connection died mid-answer (useChat says "error"; the browser may report the close only
  // once it is back online): resume the answer when online, as an app would, a few times at most.
  // A connection that survived the outage carries on by itself.
  const statusRef = useRef(status);
  statusRef.current = status;
  useEffect(() => {
    const resumeIfLost = () => {
      if (statusRef.current === "error" && navigator.onLine && (window.__resumedOnline || 0) < 3) {
        window.__resumedOnline = (window.__resumedOnline || 0) + 1;
        resumeStream();
      }
    };
    resumeIfLost();
    window.addEventListener("online", resumeIfLost);
    return () => window.removeEventListener("online", resumeIfLost);
  }, [status, resumeStream]);
  const onStop = async () => {
    stop(); // over WebSocketChatTransport this sends `abort`, which the hub passes to the producer
    if (q.get("stopvia") !== "abort") await fetch(`${api}/${chatId}/stop`, { method: "POST" });
    window.__stopped = true;
  };
  return (
    <div>
      <div id="status">{status}</div>
      {error ? <div id="error">{String(error.message)}</div> : null}
      <ol id="messages">
        {messages.map((m) => (
          <li key={m.id} className={`msg ${m.role}`} data-id={m.id}>
            {m.parts.map((p, i) =>
              p.type === "text" ? (
                <span key={i} className="text">{p.text}</span>
              ) : p.type === "reasoning" ? (
                <span key={i} className="reasoning">{p.text}</span>
              ) : null,
            )}
          </li>
        ))}
      </ol>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          sendMessage({ text: input }, { body: { n: Number(q.get("n") || 200), delay: Number(q.get("delay") || 0.02) } });
          setInput("");
        }}
      >
        <input id="prompt" value={input} onChange={(e) => setInput(e.target.value)} />
        <button id="send" type="submit">Send</button>
        <button id="stop" type="button" onClick={onStop}>Stop</button>
      </form>
    </div>
  );
}

function App() {
  const [initial, setInitial] = useState(null);
  useEffect(() => {
    fetch(`${api}/${chatId}/messages`).then((r) => r.json()).then((b) => setInitial(b.messages));
  }, []);
  return initial === null ? <div id="loading">loading</div> : <Chat initial={initial} />;
}

createRoot(document.getElementById("root")).render(<App />);
