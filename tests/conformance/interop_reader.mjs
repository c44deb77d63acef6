// Reads one Durable Stream with the official TypeScript client until the stream is closed, and
// prints every byte chunk it delivers as a JSON line: {"offset": ..., "text": ...}, then "END".
// Usage: node interop_reader.mjs <stream-url> [long-poll|sse]
import { stream } from "@durable-streams/client"

const [url, live = "long-poll"] = process.argv.slice(2)

// DS_READER_TRACE=<file>: append every request and its response (status, protocol headers, body) to
// <file>, so a failed run shows where a gap arose.
import { appendFileSync } from "node:fs"
const trace = process.env.DS_READER_TRACE
let seq = 0
const tracedFetch = async (input, init) => {
  const n = ++seq
  const u = String(input?.url ?? input)
  const log = (what) => appendFileSync(trace, `${n} ${Date.now()} ${what}\n`)
  log(`-> GET ${u}`)
  let res
  try {
    res = await fetch(input, init)
  } catch (err) {
    log(`!! ${err} ${err?.cause ?? ""}`)
    throw err
  }
  const h = [...res.headers].filter(([k]) => /^(stream-|etag|cache-control|content-type)/.test(k))
  log(`<- ${res.status} ${JSON.stringify(h)}`)
  const copy = res.clone()
  ;(async () => {
    try {
      const reader = copy.body?.getReader()
      if (!reader) return log("body: none")
      const dec = new TextDecoder()
      for (;;) {
        const { done, value } = await reader.read()
        if (done) return log("body: eof")
        log(`body: ${JSON.stringify(dec.decode(value, { stream: true }))}`)
      }
    } catch (err) {
      log(`body error: ${err} ${err?.cause ?? ""}`)
    }
  })()
  return res
}
const res = await stream({
  url,
  live,
  offset: "-1",
  // the hub restarts under us: retry connection failures quickly and forever
  backoffOptions: { initialDelay: 50, maxDelay: 500, multiplier: 1.5, maxRetries: Infinity },
  onError: (err) => {
    process.stderr.write(`reader error (retrying): ${err}\n`)
    return {}
  },
  warnOnHttp: false,
  ...(trace ? { fetch: tracedFetch } : {}),
})
const note = (what) => trace && appendFileSync(trace, `reader ${Date.now()} ${what}\n`)
const decoder = new TextDecoder()
await new Promise((resolve) => {
  // The end is the chunk that says streamClosed, not `res.closed`: the client settles `closed` as soon
  // as it stops fetching, which is while subscribeBytes still reads the body of the last response (the
  // one carrying Stream-Closed), so ending on `closed` would drop that response's chunks unprinted.
  res.subscribeBytes(async (chunk) => {
    const text = decoder.decode(chunk.data, { stream: true })
    note(`chunk offset=${chunk.offset} bytes=${chunk.data.length} closed=${chunk.streamClosed}`)
    if (text.length > 0) process.stdout.write(JSON.stringify({ offset: chunk.offset, text }) + "\n")
    if (chunk.streamClosed) resolve()
  })
  res.closed.then(
    () => {
      note("res.closed settled")
      // closed without a streamClosed chunk (cancelled, or ended early): an error, reported after a
      // bounded wait for the last response's chunk
      setTimeout(() => {
        process.stderr.write("reader: the stream ended without a streamClosed chunk\n")
        process.exit(1) // no END line: the test reports this stderr
      }, 10_000)
    },
    (err) => {
      process.stderr.write(`reader closed with error: ${err}\n`)
      process.exitCode = 1
      resolve()
    },
  )
})
process.stdout.write("END\n")
process.exit()
