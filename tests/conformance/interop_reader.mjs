// Reads one Durable Stream with the official TypeScript client until the stream is closed, and
// prints every byte chunk it delivers as a JSON line: {"offset": ..., "text": ...}, then "END".
// Usage: node interop_reader.mjs <stream-url> [long-poll|sse]
import { stream } from "@durable-streams/client"

const [url, live = "long-poll"] = process.argv.slice(2)
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
})
const decoder = new TextDecoder()
await new Promise((resolve) => {
  res.subscribeBytes(async (chunk) => {
    const text = decoder.decode(chunk.data, { stream: true })
    if (text.length > 0) process.stdout.write(JSON.stringify({ offset: chunk.offset, text }) + "\n")
    if (chunk.streamClosed) resolve()
  })
  res.closed.then(resolve, (err) => {
    process.stderr.write(`reader closed with error: ${err}\n`)
    process.exitCode = 1
    resolve()
  })
})
process.stdout.write("END\n")
process.exit()
