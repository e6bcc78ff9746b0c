// A fake WebSocket the tests drive as the server would, and helpers for blobs.

import { IDBFactory } from "fake-indexeddb";
import { IndexedDBChunkStore } from "../src/store.js";
import type { SocketLike } from "../src/uploader.js";

export class FakeSocket implements SocketLike {
  binaryType: BinaryType = "blob";
  readyState = 0;
  bufferedAmount = 0;
  /** Everything the client sent, in order. */
  readonly sent: Array<string | Blob | ArrayBuffer> = [];
  /** The client's close(), if it called it. */
  closedByClient: { code?: number; reason?: string } | null = null;
  onopen: ((ev: Event) => unknown) | null = null;
  onmessage: ((ev: MessageEvent) => unknown) | null = null;
  onerror: ((ev: Event) => unknown) | null = null;
  onclose: ((ev: CloseEvent) => unknown) | null = null;

  constructor(readonly url: string) {}

  send(data: string | Blob | ArrayBuffer): void {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    this.sent.push(data);
  }

  close(code?: number, reason?: string): void {
    this.closedByClient = { code, reason };
    this.readyState = 2;
  }

  // ---- the server's side ----

  open(): void {
    this.readyState = 1;
    this.onopen?.(new Event("open"));
  }

  say(message: object): void {
    this.onmessage?.({ data: JSON.stringify(message) } as MessageEvent);
  }

  /** The server closes the connection (or it drops: 1006). */
  drop(code: number, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason } as CloseEvent);
  }

  /** Text messages the client sent, parsed. */
  texts(): Array<Record<string, unknown>> {
    return this.sent.filter((d): d is string => typeof d === "string").map((d) => JSON.parse(d));
  }

  /** The binary frames the client sent, concatenated. */
  async bytes(): Promise<Uint8Array> {
    const frames = this.sent.filter((d) => typeof d !== "string") as Blob[];
    return new Uint8Array(await new Blob(frames).arrayBuffer());
  }
}

/** Hands out FakeSockets and remembers them. */
export class FakeServer {
  readonly sockets: FakeSocket[] = [];
  readonly factory = (url: string): FakeSocket => {
    const socket = new FakeSocket(url);
    this.sockets.push(socket);
    return socket;
  };

  get last(): FakeSocket {
    const s = this.sockets.at(-1);
    if (!s) throw new Error("no socket was opened");
    return s;
  }
}

/** A blob of `size` bytes whose content tells where it came from. */
export function chunk(size: number, seed: number): Blob {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (seed * 31 + i) & 0xff;
  return new Blob([bytes]);
}

export async function bytesOf(...blobs: Blob[]): Promise<Uint8Array> {
  return new Uint8Array(await new Blob(blobs).arrayBuffer());
}

/** A fresh IndexedDB (fake-indexeddb) and a store on it; `reopen` is the next page load. */
export async function freshStore(): Promise<{ store: IndexedDBChunkStore; reopen: () => Promise<IndexedDBChunkStore> }> {
  const indexedDB = new IDBFactory();
  const open = async () => {
    const store = await IndexedDBChunkStore.open({ indexedDB });
    if (!store) throw new Error("fake-indexeddb did not open");
    return store;
  };
  return { store: await open(), reopen: open };
}
