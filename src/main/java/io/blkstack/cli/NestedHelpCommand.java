package io.blkstack.cli;

import java.io.PrintWriter;

import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Help;
import picocli.CommandLine.IHelpCommandInitializable2;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.ParameterException;

/**
 * {@code blkstack help [COMMAND [SUBCOMMAND...]]}: prints the usage of the command the words name,
 * however deep ({@code help scenario run} is the help of {@code scenario run}). picocli's own
 * {@link CommandLine.HelpCommand} looks at the first word only, so it printed the help of
 * {@code scenario} there. An unknown word is a usage error that names it.
 */
@Command(name = "help", helpCommand = true,
        description = "Print the usage of blkstack or of the named (sub)command.")
final class NestedHelpCommand implements IHelpCommandInitializable2, Runnable {

    @Parameters(paramLabel = "COMMAND", arity = "0..*", description = "The command and subcommands to describe.")
    private String[] words = {};

    private CommandLine self;
    private Help.ColorScheme colorScheme;
    private PrintWriter out;

    @Override
    public void init(CommandLine helpCommandLine, Help.ColorScheme colors, PrintWriter outWriter, PrintWriter errWriter) {
        this.self = helpCommandLine;
        this.colorScheme = colors;
        this.out = outWriter;
    }

    /** Walks from the parent of {@code help} down the words, then prints that command's usage. */
    @Override
    public void run() {
        if (self == null || self.getParent() == null) {
            throw new IllegalStateException("help: not initialised as a subcommand");
        }
        CommandLine command = self.getParent();
        for (String word : words) {
            CommandLine next = command.getSubcommands().get(word);
            if (next == null) {
                throw new ParameterException(self, "Unknown subcommand '" + word + "' of '"
                        + command.getCommandSpec().qualifiedName() + "'.");
            }
            command = next;
        }
        command.usage(out, colorScheme);
        out.flush();
    }
}
