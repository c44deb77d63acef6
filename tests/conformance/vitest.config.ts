import { defineConfig } from "vitest/config"

// One worker (the suite's tests share one hub), generous timeouts for a loaded CI machine.
export default defineConfig({
  test: {
    include: ["*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    fileParallelism: false,
  },
})
