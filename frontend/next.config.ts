import type { NextConfig } from "next";
import { PHASE_DEVELOPMENT_SERVER } from "next/constants";

// Static export: `next build` writes a plain site to out/, which the Python api
// serves at `/`. There is no Node server in production.
//
// `npm run dev` only: with TAPEDECK_DEV_API=http://127.0.0.1:8000 the dev server
// forwards /api/* to a running Tapedeck (`tapedeck up`); WebSockets go there
// directly via NEXT_PUBLIC_VIDEO_WS_URL / NEXT_PUBLIC_AUDIO_WS_URL, e.g.
//   TAPEDECK_DEV_API=http://127.0.0.1:8000 \
//   NEXT_PUBLIC_VIDEO_WS_URL=ws://127.0.0.1:8000/ws/video \
//   NEXT_PUBLIC_AUDIO_WS_URL=ws://127.0.0.1:8000/ws/audio npm run dev
export default function config(phase: string): NextConfig {
  const base: NextConfig = {
    output: "export",
    trailingSlash: true,
    images: { unoptimized: true },
    reactStrictMode: true,
    poweredByHeader: false,
    // `npm run dev` opened as http://127.0.0.1:3000 (not only localhost).
    allowedDevOrigins: ["127.0.0.1", "localhost"],
  };
  const devApi = process.env.TAPEDECK_DEV_API?.replace(/\/+$/, "");
  if (phase === PHASE_DEVELOPMENT_SERVER && devApi) {
    return {
      ...base,
      output: undefined,
      // Without this, /api/sessions would be redirected to /api/sessions/.
      skipTrailingSlashRedirect: true,
      async rewrites() {
        return [{ source: "/api/:path*", destination: `${devApi}/api/:path*` }];
      },
    };
  }
  return base;
}
