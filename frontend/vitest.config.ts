import { defineConfig } from "vitest/config";

// The app's pure logic (the recorder package has its own config and tests).
export default defineConfig({
  test: {
    environment: "node",
    include: ["components/**/*.test.ts", "lib/**/*.test.ts"],
  },
});
