// Checked-in stand-in for the generated (gitignored) next-env.d.ts, so that
// `tsc --noEmit` works on a fresh clone before any `next build`.
/// <reference types="next" />

declare namespace NodeJS {
  interface ProcessEnv {
    /** Full WebSocket URL of the video track endpoint, e.g. ws://host:8000/ws/video. */
    readonly NEXT_PUBLIC_VIDEO_WS_URL?: string;
    /** Full WebSocket URL of the audio track endpoint, e.g. ws://host:8000/ws/audio. */
    readonly NEXT_PUBLIC_AUDIO_WS_URL?: string;
    /** Optional: full WebSocket URL of the screen track endpoint. */
    readonly NEXT_PUBLIC_SCREEN_WS_URL?: string;
  }
}
