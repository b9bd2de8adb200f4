package io.blkstack.cli;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/** The command line that runs {@link Main} in a JVM of its own, as the launcher script does, for tests that need a second process. */
public final class MainProcess {

    private MainProcess() {
    }

    /** {@code java --enable-native-access=ALL-UNNAMED -cp CLASSPATH io.blkstack.cli.Main ARGS...}, this JVM's java and class path. */
    public static List<String> command(String... args) {
        List<String> command = new ArrayList<>();
        command.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        command.add("--enable-native-access=ALL-UNNAMED");
        command.add("-cp");
        command.add(System.getProperty("java.class.path"));
        command.add(Main.class.getName());
        command.addAll(List.of(args));
        return command;
    }
}
