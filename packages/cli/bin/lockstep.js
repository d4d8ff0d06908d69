#!/usr/bin/env node
// Plain JavaScript, so that npm links it before anything is built and Node runs it from node_modules (where
// Node strips no types). It loads the command through the package's own exports: the built dist/ once
// installed; the TypeScript sources in the Lockstep repository, where npm scripts set the @lockstep/source
// condition (.npmrc).
import { main } from '@lockstep/cli';

process.exitCode = await main(process.argv.slice(2));
// A command is done when main returns: whatever it left open (a socket, a timer of a failed start)
// must not keep the process alive after it.
setTimeout(() => process.exit(), 2_000).unref();
