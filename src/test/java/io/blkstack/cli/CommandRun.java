package io.blkstack.cli;

import java.io.PrintWriter;
import java.io.StringWriter;
import picocli.CommandLine;

/** What one in-process run of blkstack's command line printed and returned. */
record CommandRun(int exitCode, String out, String err) {

    /** Runs blkstack's command line ({@link Main#commandLine}) in-process with {@code args}. */
    static CommandRun run(String... args) {
        return run(Main.commandLine(), args);
    }

    /** Runs {@code commandLine} in-process with {@code args}, capturing what it prints. */
    static CommandRun run(CommandLine commandLine, String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        commandLine.setOut(new PrintWriter(out, true));
        commandLine.setErr(new PrintWriter(err, true));
        int exitCode = commandLine.execute(args);
        return new CommandRun(exitCode, out.toString(), err.toString());
    }
}
