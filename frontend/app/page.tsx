import { TapedeckApp } from "@/components/TapedeckApp";

export default function Home() {
  return (
    <main className="page">
      <header className="masthead">
        <h1>
          <span className="logo" aria-hidden="true" />
          Tapedeck
        </h1>
        <p className="tagline">Record your camera or screen with your microphone. It is saved as you go.</p>
      </header>
      <TapedeckApp />
      <footer className="foot muted">
        Every second of a recording is sent to the server while you record and kept until you delete it or it expires.
      </footer>
    </main>
  );
}
