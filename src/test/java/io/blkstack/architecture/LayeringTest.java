package io.blkstack.architecture;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * The layering of DESIGN.md section 2, read from the main sources: which top-level package of
 * {@code io.blkstack} names which (imports and fully qualified names alike).
 *
 * <p>Rules: nothing outside {@code cli} depends on {@code cli} (the command line is the top);
 * {@code units} depends on no other package (anything may parse a size); and the package graph has
 * no cycles except the two pairs whose {@code package-info.java} says why they belong together,
 * {@code bio}/{@code block} and {@code kernel}/{@code mem}.
 */
class LayeringTest {

    private static final Path SOURCES = Path.of("src/main/java/io/blkstack");
    private static final Pattern REFERENCE = Pattern.compile("\\bio\\.blkstack\\.([a-z]+)\\b");

    /** The package pairs allowed to depend on each other, each documented in its package-info. */
    private static final Set<Set<String>> ALLOWED_CYCLES = Set.of(Set.of("bio", "block"), Set.of("kernel", "mem"));

    // Proves nothing below the command line reaches up into it: a config or server class that
    // imported a picocli adapter would be listed here with its file.
    @Test
    void onlyCliDependsOnCli() throws IOException {
        List<String> offenders = new ArrayList<>();
        for (Map.Entry<Path, Set<String>> e : referencesByFile().entrySet()) {
            if (!packageOf(e.getKey()).equals("cli") && e.getValue().contains("cli")) {
                offenders.add(e.getKey().toString());
            }
        }
        assertEquals(List.of(), offenders, "files outside cli that refer to io.blkstack.cli");
    }

    // Proves units is a leaf: config, cli and nbd all use it, so it must need none of them.
    @Test
    void unitsDependsOnNothing() throws IOException {
        assertEquals(Set.of(), packageGraph().getOrDefault("units", Set.of()), "packages units refers to");
    }

    // Proves the package graph has no cycles beyond the two documented pairs: every strongly
    // connected group of packages (found by transitive closure) is a single package or one of
    // the allowed pairs.
    @Test
    void noPackageCyclesBeyondTheDocumentedPairs() throws IOException {
        Map<String, Set<String>> graph = packageGraph();
        Map<String, Set<String>> reach = new TreeMap<>();
        for (String p : graph.keySet()) {
            Set<String> seen = new TreeSet<>();
            List<String> work = new ArrayList<>(graph.get(p));
            while (!work.isEmpty()) {
                String q = work.remove(work.size() - 1);
                if (seen.add(q)) {
                    work.addAll(graph.getOrDefault(q, Set.of()));
                }
            }
            reach.put(p, seen);
        }
        Set<Set<String>> groups = new java.util.HashSet<>();
        for (String p : graph.keySet()) {
            Set<String> group = new TreeSet<>();
            group.add(p);
            for (String q : reach.get(p)) {
                if (reach.getOrDefault(q, Set.of()).contains(p)) {
                    group.add(q);
                }
            }
            if (group.size() > 1) {
                groups.add(Set.copyOf(group));
            }
        }
        assertEquals(ALLOWED_CYCLES, groups, "package cycles (each a group of packages that reach each other)");
        for (Set<String> pair : ALLOWED_CYCLES) {
            for (String p : pair) {
                assertTrue(Files.exists(SOURCES.resolve(p).resolve("package-info.java")),
                        p + " is in a cycle and must say why in its package-info.java");
            }
        }
    }

    /** Top-level package to the other top-level packages its files refer to. */
    private static Map<String, Set<String>> packageGraph() throws IOException {
        Map<String, Set<String>> graph = new TreeMap<>();
        for (Map.Entry<Path, Set<String>> e : referencesByFile().entrySet()) {
            String from = packageOf(e.getKey());
            Set<String> to = graph.computeIfAbsent(from, k -> new TreeSet<>());
            for (String p : e.getValue()) {
                if (!p.equals(from)) {
                    to.add(p);
                }
            }
        }
        return graph;
    }

    /** Each main source file to the top-level packages it names. */
    private static Map<Path, Set<String>> referencesByFile() throws IOException {
        assertTrue(Files.isDirectory(SOURCES), SOURCES.toAbsolutePath() + " is missing: run from the project root");
        Map<Path, Set<String>> out = new TreeMap<>();
        try (Stream<Path> files = Files.walk(SOURCES)) {
            for (Path f : files.filter(p -> p.toString().endsWith(".java")).toList()) {
                Set<String> refs = new TreeSet<>();
                for (String line : Files.readAllLines(f)) {
                    String code = line.strip();
                    if (code.startsWith("package ") || code.startsWith("*") || code.startsWith("//")
                            || code.startsWith("/*")) {
                        continue; // the file's own package line and comments are not dependencies
                    }
                    Matcher m = REFERENCE.matcher(line);
                    while (m.find()) {
                        refs.add(m.group(1));
                    }
                }
                out.put(SOURCES.relativize(f), refs);
            }
        }
        return out;
    }

    /** The top-level package of a file below {@link #SOURCES}; files directly in it belong to "". */
    private static String packageOf(Path relative) {
        return relative.getNameCount() > 1 ? relative.getName(0).toString() : "";
    }
}
