// The official Durable Streams conformance suite, pointed at a hub that run.py started.
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

runConformanceTests({ baseUrl: process.env.CONFORMANCE_TEST_URL ?? "" })
