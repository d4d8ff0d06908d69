#!/usr/bin/env node
import { main } from '../src/main.ts';

process.exitCode = await main(process.argv.slice(2));
// A command is done when main returns: whatever it left open (a socket, a timer of a failed start)
// must not keep the process alive after it.
setTimeout(() => process.exit(), 2_000).unref();
