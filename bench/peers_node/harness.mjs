// bench.peers' Node side: runs one peer of the hub on 127.0.0.1 so that bench/peers.py can drive it
// over HTTP, exactly as a Python client drives the hub. Only the libraries' public APIs are used.
//
//   node harness.mjs ds PORT DATA_DIR    the Durable Streams reference server (@durable-streams/server),
//                                        file-backed in DATA_DIR (segment files + LMDB metadata)
//   node harness.mjs rs PORT REDIS_URL   vercel/resumable-stream on that redis-server, behind 4 routes:
//     POST /start/ID        createNewResumableStream(ID, source): answers once the stream is announced
//     POST /push/ID         the request body (chunked, UTF-8) becomes the source's chunks as they arrive;
//                           answers when the source has ended and the library has cleaned up
//     GET  /read/ID?skip=N  resumeExistingStream(ID, N) piped to the response (404 unknown, 422 done)
//     GET  /healthz         200 once the Redis clients are connected
//
// Both answer GET /healthz with 200 once ready (bench.common.ServerProcess waits for that) and stop on
// SIGTERM; ServerProcess also has the kernel SIGKILL the harness when the benchmark dies.
import http from "node:http";

const [mode, portArg, where] = process.argv.slice(2);
const port = Number(portArg);
const host = "127.0.0.1";

async function runDs() {
  const { DurableStreamTestServer } = await import("@durable-streams/server");
  // compression off: every client here is on loopback, and the hub does not compress HTTP bodies either
  const server = new DurableStreamTestServer({ port, host, dataDir: where, compression: false });
  await server.start();
  // the reference server maps every URL path to a stream, so readiness is a stream named /healthz
  const r = await fetch(`http://${host}:${port}/healthz`, {
    method: "PUT",
    headers: { "content-type": "text/plain" },
  });
  if (r.status !== 201 && r.status !== 200) throw new Error(`PUT /healthz: ${r.status}`);
  return async () => server.stop();
}

async function runRs() {
  const { createClient } = await import("redis");
  const { createResumableStreamContext } = await import("resumable-stream/redis");
  const publisher = createClient({ url: where });
  const subscriber = createClient({ url: where });
  await Promise.all([publisher.connect(), subscriber.connect()]);
  const ctx = createResumableStreamContext({ waitUntil: null, publisher, subscriber });
  const live = new Map(); // id -> { controller, drained }

  async function drain(stream) {
    // the first reader of a new resumable stream is the request that started it (a chat's POST);
    // here nobody waits on it, so it is read and dropped
    const reader = stream.getReader();
    for (;;) {
      const { done } = await reader.read();
      if (done) return;
    }
  }

  const server = http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url, `http://${host}`);
      const [, op, id] = url.pathname.match(/^\/(\w+)\/?(.*)$/) ?? [];
      if (op === "healthz") {
        res.writeHead(200).end("ok");
      } else if (op === "start" && req.method === "POST") {
        let controller;
        const source = new ReadableStream({ start: (c) => (controller = c) });
        const out = await ctx.createNewResumableStream(id, () => source);
        if (out === null) return res.writeHead(409).end("exists");
        live.set(id, { controller, drained: drain(out) });
        req.resume();
        res.writeHead(200).end("started");
      } else if (op === "push" && req.method === "POST") {
        const s = live.get(id);
        if (!s) return res.writeHead(404).end("not started");
        req.setEncoding("utf8");
        for await (const text of req) s.controller.enqueue(text);
        s.controller.close();
        await s.drained;
        live.delete(id);
        res.writeHead(200).end("done");
      } else if (op === "read" && req.method === "GET") {
        const skip = url.searchParams.has("skip") ? Number(url.searchParams.get("skip")) : undefined;
        const stream = await ctx.resumeExistingStream(id, skip);
        if (stream === undefined) return res.writeHead(404).end("unknown");
        if (stream === null) return res.writeHead(422).end("Stream is already done");
        res.writeHead(200, { "content-type": "text/plain; charset=utf-8" });
        res.flushHeaders();
        const reader = stream.getReader();
        res.on("close", () => reader.cancel().catch(() => {}));
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          res.write(value);
        }
        res.end();
      } else {
        res.writeHead(404).end("no such route");
      }
    } catch (e) {
      if (!res.headersSent) res.writeHead(500);
      res.end(String(e));
    }
  });
  server.keepAliveTimeout = 60_000;
  await new Promise((ok) => server.listen(port, host, ok));
  return async () => {
    server.close();
    await Promise.allSettled([publisher.quit(), subscriber.quit()]);
  };
}

const stop = await (mode === "ds" ? runDs() : mode === "rs" ? runRs() : Promise.reject(new Error(`mode ${mode}?`)));
console.log(`ready ${mode} ${port}`);
let stopping = false;
const bye = async () => {
  if (stopping) return;
  stopping = true;
  await stop().catch(() => {});
  process.exit(0);
};
process.on("SIGTERM", bye);
process.on("SIGINT", bye);
