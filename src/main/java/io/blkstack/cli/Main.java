package io.blkstack.cli;

import java.io.IOException;
import java.io.PrintWriter;
import java.util.ArrayDeque;
import java.util.Deque;

import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.ParseResult;

/**
 * The {@code blkstack} command: the entry point of the shaded jar. It only parses the command
 * line and dispatches to one class per subcommand; nothing else in blkstack depends on this
 * package.
 */
@Command(
        name = "blkstack",
        mixinStandardHelpOptions = true,
        versionProvider = BlkstackVersion.class,
        description = "A user-space block layer for the JVM: device-mapper style stacks over files"
                + " and memory, exported over NBD, with forward progress under bounded memory.",
        subcommands = {ServeCommand.class, BenchCommand.class, CheckCommand.class, ScenarioCommand.class, TableCommand.class, LogWritesCommand.class, ThinCommand.class, CtlCommand.class, NestedHelpCommand.class},
        exitCodeListHeading = "%nExit codes:%n",
        exitCodeList = {
            "0:success",
            "1:usage or configuration error",
            "2:I/O or runtime error",
            "3:a deadlock or livelock was found"})
public final class Main {

    /** Runs blkstack with the process's arguments and exits with the command's exit code. */
    public static void main(String[] args) {
        System.exit(commandLine().execute(args));
    }

    /**
     * Builds the configured command line: exit codes from {@link ExitCodes}, enum values in any
     * case ({@code --device null}). Tests use this to run commands in-process.
     */
    public static CommandLine commandLine() {
        return commandLine(CommandLine.defaultFactory());
    }

    /** {@link #commandLine()} with commands made by {@code factory} (tests give commands extra state). */
    static CommandLine commandLine(CommandLine.IFactory factory) {
        CommandLine commandLine = new CommandLine(new Main(), factory);
        commandLine.setCaseInsensitiveEnumValuesAllowed(true);
        commandLine.setExecutionExceptionHandler(Main::reportFailure);
        applyExitCodes(commandLine);
        return commandLine;
    }

    /**
     * Sets the exit codes on every command in the tree: picocli keeps them per command and uses
     * the failing subcommand's, and its defaults (2 for usage errors, 1 for failures) are the
     * reverse of ours.
     */
    private static void applyExitCodes(CommandLine root) {
        Deque<CommandLine> unvisited = new ArrayDeque<>();
        unvisited.push(root);
        while (!unvisited.isEmpty()) {
            CommandLine command = unvisited.pop();
            command.getCommandSpec()
                    .exitCodeOnSuccess(ExitCodes.SUCCESS)
                    .exitCodeOnUsageHelp(ExitCodes.SUCCESS)
                    .exitCodeOnVersionHelp(ExitCodes.SUCCESS)
                    .exitCodeOnInvalidInput(ExitCodes.USAGE)
                    .exitCodeOnExecutionException(ExitCodes.RUNTIME);
            unvisited.addAll(command.getSubcommands().values());
        }
    }

    /**
     * Reports an exception that escaped a command. An I/O error is an operating condition, so
     * the user sees its message only; anything else is a bug, so the stack trace goes with it.
     */
    private static int reportFailure(Exception failure, CommandLine commandLine, ParseResult parseResult) {
        PrintWriter err = commandLine.getErr();
        if (failure instanceof IOException) {
            err.println(commandLine.getCommandName() + ": " + failure.getMessage());
        } else {
            err.println(commandLine.getCommandName() + ": internal error: " + failure);
            failure.printStackTrace(err);
        }
        err.flush();
        return ExitCodes.RUNTIME;
    }
}
