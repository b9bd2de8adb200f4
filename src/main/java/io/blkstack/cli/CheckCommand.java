package io.blkstack.cli;

import io.blkstack.block.BlockDevice;
import io.blkstack.block.MemoryDevice;
import io.blkstack.config.ConfigException;
import io.blkstack.config.StackConfig;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.Reserves;
import io.blkstack.scenario.BioSetSplitStack;
import io.blkstack.sim.Coverage;
import io.blkstack.sim.Outcome;
import io.blkstack.sim.SimConfig;
import io.blkstack.sim.SimFaults;
import io.blkstack.sim.SimResult;
import io.blkstack.sim.SimRunner;
import io.blkstack.scenario.SplittingDevice;
import io.blkstack.sim.nbd.SimNbdServer;
import io.blkstack.sim.workload.ConfigStack;
import io.blkstack.sim.workload.NbdWorkload;
import io.blkstack.sim.workload.Workload;
import io.blkstack.sim.workload.WorkloadSpec;
import java.io.IOException;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.lang.reflect.Method;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.function.Consumer;

import me.tongfei.progressbar.ConsoleProgressBarConsumer;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

/**
 * {@code blkstack check}: explores a stack and a workload on the deterministic simulator
 * (DESIGN.md section 7) for a number of seeded schedules, and reports deadlocks, livelocks,
 * misuse and data mismatches with a replay command for each and the wait-for knot of the first.
 *
 * <p>The stack is a built-in one ({@code --stack}) or a YAML configuration ({@code --config}, any
 * configuration {@code serve} accepts: file devices become simulated devices of the same size, see
 * {@link ConfigStack}); the workload is the stack's
 * built-in one or a {@link WorkloadSpec} ({@code --workload}), which checks every read against a
 * reference model. A campaign that never used a pool reserve and never fired a fault is flagged
 * VACUOUS: it did not reach the conditions the checker exists to explore. Exit 3 when something was
 * found (including a seed whose two runs differ under {@code --check-determinism}), 0 otherwise.
 */
@Command(
        name = "check",
        mixinStandardHelpOptions = true,
        versionProvider = BlkstackVersion.class,
        description = "Explore a stack under the deterministic simulator and report deadlocks,"
                + " livelocks, misuse and data mismatches, each with a replay command.")
final class CheckCommand implements Callable<Integer> {

    /** Bounds on the options. */
    static final int SCHEDULES_MAX = 10_000_000;
    /** Replay commands printed per kind of finding. */
    static final int REPLAYS_SHOWN_MAX = 5;
    /** The bottom device of the built-in workload stacks. */
    static final String MEMORY_DEVICE = "mem0";
    static final long MEMORY_DEVICE_BYTES = 4L << 20;
    static final long MEMORY_LATENCY_NANOS = 50_000;
    /** The arena of a --via nbd run on a built-in stack when --memory is not given: the smallest serve accepts. */
    static final long NBD_MEMORY_DEFAULT_BYTES = 4L << 20;
    /** Default faults: seeded extra latency on the bottom device. */
    static final String BUILT_IN_FAULTS = "latency:" + BioSetSplitStack.LOWER + "=0.5/200us";
    static final String WORKLOAD_FAULTS = "latency:" + MEMORY_DEVICE + "=0.5/200us";
    /** Default faults of a --config run: swarm over the default fault set ({@link SimFaults.Spec#DEFAULT_SET}). */
    static final String CONFIG_FAULTS = "swarm";

    /**
     * A built-in stack: its devices for a {@code --workload}, and its own workload (null: the
     * default {@link WorkloadSpec}).
     */
    record BuiltInStack(String description, Workload.StackBuilder devices, Consumer<Kernel> ownWorkload) {
    }

    /** The stacks {@code --stack} may name: the built-in ones, and any a test adds. */
    private final Map<String, BuiltInStack> stacks;

    /** The command with the built-in stacks. */
    CheckCommand() {
        this(Map.of());
    }

    /** The command with the built-in stacks and {@code extra} ones (tests add deliberately broken stacks). */
    CheckCommand(Map<String, BuiltInStack> extra) {
        Map<String, BuiltInStack> all = new LinkedHashMap<>();
        all.put("bioset-split", new BuiltInStack("a bcache-style splitting device whose bio set has a rescuer,"
                + " over a null device, with memory exhausted (own workload)", splitOverMemory(2, true),
                BioSetSplitStack.standard(true)));
        all.put("bioset-split-no-rescuer", new BuiltInStack("the same splitting device without a rescuer"
                + " (own workload)", splitOverMemory(2, false), BioSetSplitStack.standard(false)));
        all.put("split-memory", new BuiltInStack("a splitting device (4 KiB pieces, 1-bio reserve, rescuer)"
                + " over a 4 MiB memory device", splitOverMemory(8, true), null));
        all.put("memory", new BuiltInStack("a 4 MiB memory device", k -> memoryDevice(k), null));
        all.putAll(extra);
        this.stacks = Collections.unmodifiableMap(all);
    }

    private static BlockDevice memoryDevice(Kernel kernel) {
        return new MemoryDevice(kernel, MEMORY_DEVICE, MEMORY_DEVICE_BYTES, MEMORY_LATENCY_NANOS);
    }

    private static Workload.StackBuilder splitOverMemory(int splitSectors, boolean rescuer) {
        return k -> new SplittingDevice(k, BioSetSplitStack.DEVICE, memoryDevice(k), splitSectors, 1, rescuer);
    }

    @Spec
    private CommandSpec spec;

    @Option(names = "--stack", paramLabel = "NAME", defaultValue = "bioset-split",
            description = "Built-in stack: bioset-split, bioset-split-no-rescuer, split-memory, memory"
                    + " (default: ${DEFAULT-VALUE}).")
    String stack;

    @Option(names = "--config", paramLabel = "FILE",
            description = "YAML configuration as serve takes it (file devices are simulated: same size, in memory,"
                    + " seeded latency and faults; nbd: devices connect to a simulated NBD server of their size);"
                    + " replaces --stack.")
    Path configFile;

    @Option(names = "--device", paramLabel = "NAME",
            description = "With --config: a device the workload drives (repeatable; default: the first export's device).")
    List<String> deviceNames = new ArrayList<>();

    @Option(names = "--export", paramLabel = "NAME",
            description = "With --config: an export whose device the workload drives, read-only if the export is"
                    + " (repeatable, with --device too; tasks take the devices in turn).")
    List<String> exportNames = new ArrayList<>();

    /** The devices the workload drives, resolved from --export and --device. */
    private List<ConfigStack.Drive> drives = List.of();
    /** The configuration's reserve sizes, or the kernel's defaults without --config. */
    private Reserves reserves = Reserves.DEFAULTS;

    @Option(names = "--workload", paramLabel = "SPEC",
            description = "Workload with a data check: key=value list (e.g. " + WorkloadSpec.DEFAULT_TEXT
                    + "), @FILE or a .workload file (default: the stack's own workload).")
    String workloadText;

    @Option(names = "--via", paramLabel = "device|nbd", defaultValue = "device",
            description = "Where the --workload enters: the top device (default), or nbd: each task is an NBD client"
                    + " of an in-process connection to a server exporting the device (payload budget, bio set, replies).")
    String via;

    @Option(names = "--schedules", paramLabel = "N", defaultValue = "200",
            description = "Schedules to explore (default: ${DEFAULT-VALUE}).")
    int schedules;

    @Option(names = "--seed", paramLabel = "S", defaultValue = "1",
            description = "Master seed; each schedule's seed derives from it (default: ${DEFAULT-VALUE}).")
    long seed;

    @Option(names = "--strategy", paramLabel = "random|pct:D", defaultValue = "random",
            description = "Scheduling strategy (default: ${DEFAULT-VALUE}).")
    String strategy;

    @Option(names = "--jobs", paramLabel = "N",
            description = "Schedules run at once, each on its own thread; the results are those of one at a time"
                    + " (default: the number of processors; PCT with a learned bound runs one at a time).")
    Integer jobs;

    @Option(names = "--pct-bound", paramLabel = "N", defaultValue = "0",
            description = "Fixed PCT decision bound, as printed in replay commands (default: learned).")
    long pctBound;

    @Option(names = "--memory", paramLabel = "SIZE", defaultValue = "256KiB", converter = SizeConverter.class,
            description = "Simulated page arena (default: ${DEFAULT-VALUE}, 4MiB with --via nbd; with --config, the"
                    + " file's memory unless given).")
    long memoryBytes;

    @Option(names = "--faults", paramLabel = "SPEC",
            description = "Fault rules: SITE=P, SITE@N, latency:DEV=P/MAX, swarm (each run enables a random half;"
                    + " alone: of the default set " + SimFaults.Spec.DEFAULT_SET + "); '' for none (default: swarm"
                    + " with --config, else extra latency on the bottom device).")
    String faults;

    @Option(names = "--faults-at-setup",
            description = "Let faults fire while the stack is built too (default: off, so a run's faults hit the"
                    + " running stack and a failed construction is not reported as a crash).")
    boolean faultsAtSetup;

    @Option(names = "--policy", paramLabel = "NAME=VALUE",
            description = "Switch a mechanism to its old design, e.g. bioset-rescuer=legacy (repeatable).")
    List<String> policies = new ArrayList<>();

    @Option(names = "--replay", paramLabel = "SEED",
            description = "Run exactly this schedule seed (from a replay command) and print its knot.")
    Long replay;

    @Option(names = "--trace", paramLabel = "FILE",
            description = "Write the trace of the replayed seed, or of a campaign's first finding (else its first"
                    + " schedule), as JSON lines.")
    Path traceFile;

    @Option(names = "--check-determinism",
            description = "Run every seed twice and compare the trace hashes.")
    boolean checkDeterminism;

    @Option(names = "--no-progress", description = "No progress bar (it is shown only on a terminal anyway).")
    boolean noProgress;

    @Option(names = "--engine", paramLabel = "sim|threads", defaultValue = "sim",
            description = "sim: the deterministic checker (default); threads: the same stack and workload on real threads"
                    + " with the hung-task watchdog, --schedules runs, stopping at the first that is not OK.")
    String engine;

    @Override
    public Integer call() {
        if (schedules < 1 || schedules > SCHEDULES_MAX) {
            throw usage("--schedules: '" + schedules + "' is not between 1 and " + SCHEDULES_MAX);
        }
        if (jobs != null && (jobs < 1 || jobs > SimRunner.JOBS_MAX)) {
            throw usage("--jobs: '" + jobs + "' is not between 1 and " + SimRunner.JOBS_MAX);
        }
        Consumer<Kernel> workload = buildWorkload();
        SimConfig config = buildConfig();
        PrintWriter out = spec.commandLine().getOut();
        if (!"sim".equals(engine)) {
            return callThreads(workload, config, out);
        }
        SimRunner runner = new SimRunner(config, jobs != null ? jobs : SimRunner.defaultJobs());
        out.println("blkstack check: " + stackLabel() + ", workload " + workloadLabel() + ("nbd".equals(via) ? " via nbd" : "")
                + ", strategy " + config.strategy()
                + ", memory " + config.memoryBytes() + " bytes, faults " + faultsLabel(config) + ", policies "
                + (policies.isEmpty() ? "default" : String.join(" ", policies)));
        if (replay != null) {
            return replayOne(runner, workload, out);
        }
        SimResult[] firstRun = new SimResult[1];
        SimRunner.CampaignResult c;
        try (ProgressBar bar = progressBar()) {
            c = runner.campaign(seed, schedules, false, checkDeterminism, workload, r -> {
                if (firstRun[0] == null) {
                    firstRun[0] = r;
                }
                if (bar != null) {
                    bar.step();
                    bar.setExtraMessage(r.isFinding() ? "found " + r.outcome() : "");
                }
            });
        }
        printSummary(runner, c, out);
        if (traceFile != null) {
            SimResult traced = c.firstFinding() != null ? c.firstFinding() : firstRun[0];
            writeTrace(config, traced, workload, out);
        }
        out.flush();
        boolean found = c.findingCount() > 0 || !c.nondeterministicSeeds().isEmpty();
        return found ? ExitCodes.DEADLOCK : ExitCodes.SUCCESS;
    }

    /** {@code --engine threads}: the workload on real threads, through {@link CheckThreadsRun}. */
    private int callThreads(Consumer<Kernel> workload, SimConfig config, PrintWriter out) {
        if (!"threads".equals(engine)) {
            throw usage("--engine: '" + engine + "' is not sim or threads");
        }
        if (replay != null || traceFile != null || checkDeterminism) {
            throw usage("--engine threads: --replay, --trace and --check-determinism need the simulator (--engine sim)");
        }
        out.println("blkstack check: " + stackLabel() + ", workload " + workloadLabel() + ", engine threads, memory "
                + config.memoryBytes() + " bytes, policies " + (policies.isEmpty() ? "default" : String.join(" ", policies)));
        int code = CheckThreadsRun.run(stackLabel(), workload, config.policies(), config.memoryBytes(), schedules, noProgress, out);
        out.flush();
        return code;
    }

    /** The stack's workload: its own, or the --workload spec against its (or the configuration's) top device. */
    private Consumer<Kernel> buildWorkload() {
        WorkloadSpec workloadSpec = null;
        if (workloadText != null) {
            try {
                workloadSpec = WorkloadSpec.fromArgument(workloadText);
            } catch (IllegalArgumentException | UncheckedIOException e) {
                throw usage("--workload: " + e.getMessage());
            }
        }
        if (!"device".equals(via) && !"nbd".equals(via)) {
            throw usage("--via: '" + via + "' is neither device nor nbd");
        }
        if (configFile != null) {
            StackConfig config = loadConfig();
            WorkloadSpec w = workloadSpec == null ? WorkloadSpec.defaults() : workloadSpec;
            Workload.DrivenStackBuilder driven = ConfigStack.builder(config, drives);
            if ("nbd".equals(via)) {
                if (!w.events().isEmpty() || drives.size() > 1) {
                    throw usage("--via nbd drives one export without events; drop --workload events or extra"
                            + " --export/--device");
                }
                boolean remote = config.devices().stream().anyMatch(d -> d instanceof StackConfig.RemoteSpec);
                return new NbdWorkload(k -> driven.build(k).devices().get(0), w, remote);
            }
            return Workload.driving(driven, w);
        }
        if (!deviceNames.isEmpty() || !exportNames.isEmpty()) {
            throw usage("--device and --export need --config");
        }
        if (workloadSpec != null && !workloadSpec.events().isEmpty()) {
            throw usage("--workload: events (" + workloadSpec.events() + ") need a --config stack, which offers"
                    + " reloads, thin messages and restarts");
        }
        BuiltInStack builtIn = stacks.get(stack);
        if (builtIn == null) {
            throw usage("--stack: '" + stack + "' is not a built-in stack; known: " + String.join(", ", stacks.keySet()));
        }
        if (workloadSpec == null && builtIn.ownWorkload() != null && !"nbd".equals(via)) {
            return builtIn.ownWorkload();
        }
        return workloadOver(builtIn.devices(), workloadSpec == null ? WorkloadSpec.defaults() : workloadSpec);
    }

    /** The workload spec entering straight into the device, or through the NBD request path ({@code --via nbd}). */
    private Consumer<Kernel> workloadOver(Workload.StackBuilder devices, WorkloadSpec workloadSpec) {
        return "nbd".equals(via) ? new NbdWorkload(devices, workloadSpec) : new Workload(devices, workloadSpec);
    }

    /** Reads the configuration and resolves the devices to drive (--export, --device, else the first export). */
    private StackConfig loadConfig() {
        StackConfig config;
        try {
            config = StackConfig.load(configFile);
        } catch (ConfigException e) {
            throw usage(e.getMessage());
        } catch (IOException e) {
            throw usage("--config: cannot read " + configFile + ": " + e.getMessage());
        }
        for (StackConfig.DeviceSpec d : config.devices()) {
            if (d instanceof StackConfig.RemoteSpec r && r.sizeBytes() == 0) {
                throw usage(configFile + ":" + r.line() + ": devices." + r.name() + ": a remote device needs 'size' under"
                        + " check: it is connected to a simulated NBD server of that size, not to " + r.uri());
            }
        }
        if (!spec.commandLine().getParseResult().hasMatchedOption("--memory")) {
            memoryBytes = config.memoryBytes();
        }
        List<ConfigStack.Drive> found = new ArrayList<>();
        for (String name : exportNames) {
            StackConfig.ExportSpec export = config.exports().stream().filter(e -> e.name().equals(name)).findFirst()
                    .orElseThrow(() -> usage("--export: '" + name + "' is not an export of " + configFile + "; known: "
                            + String.join(", ", config.exports().stream().map(StackConfig.ExportSpec::name).toList())));
            found.add(new ConfigStack.Drive(export.device(), export.readOnly()));
        }
        for (String name : deviceNames) {
            boolean known = config.devices().stream().anyMatch(d -> d.name().equals(name))
                    || config.mapped().stream().anyMatch(m -> m.name().equals(name));
            if (!known) {
                throw usage("--device: '" + name + "' is not a device or mapped device of " + configFile);
            }
            found.add(new ConfigStack.Drive(name, false));
        }
        if (found.isEmpty()) {
            String top = defaultDevice(config);
            if (top == null) {
                throw usage("--config: " + configFile + " has no devices");
            }
            found.add(new ConfigStack.Drive(top, false));
        }
        drives = List.copyOf(found);
        reserves = config.reserves();
        return config;
    }

    /** The first export's device, else the last mapped device, else the last bottom device. */
    private static String defaultDevice(StackConfig config) {
        if (!config.exports().isEmpty()) {
            return config.exports().get(0).device();
        }
        if (!config.mapped().isEmpty()) {
            return config.mapped().get(config.mapped().size() - 1).name();
        }
        return config.devices().isEmpty() ? null : config.devices().get(config.devices().size() - 1).name();
    }

    /** The simulator configuration from the options; bad values are usage errors. */
    private SimConfig buildConfig() {
        if ("nbd".equals(via) && configFile == null && !spec.commandLine().getParseResult().hasMatchedOption("--memory")) {
            memoryBytes = NBD_MEMORY_DEFAULT_BYTES; // an NBD server needs room for its budget: 256 KiB holds no request
        }
        try {
            return SimConfig.builder().memory(memoryBytes).strategy(strategy).faults(effectiveFaults())
                    .faultsAtSetup(faultsAtSetup).pctStepBound(pctBound).policies(Policies.parse(policies))
                    .reserves(reserves).build();
        } catch (IllegalArgumentException e) {
            throw usage(e.getMessage());
        }
    }

    /** The fault rules: as given, swarm over the default set for a configuration, or seeded latency on the bottom device of the built-in stacks. */
    private String effectiveFaults() {
        if (faults != null) {
            return faults;
        }
        if (configFile != null) {
            return CONFIG_FAULTS;
        }
        BuiltInStack builtIn = stacks.get(stack);
        return workloadText == null && builtIn != null && builtIn.ownWorkload() != null && !"nbd".equals(via)
                ? BUILT_IN_FAULTS : WORKLOAD_FAULTS;
    }

    /** The faults as the summary names them: the text, what swarm stands for, whether they are the default, and set-up. */
    private String faultsLabel(SimConfig config) {
        SimFaults.Spec spec = config.faults();
        String label = "'" + spec + "'";
        if (spec.swarm() || spec.isEmpty()) {
            label += " (" + spec.describe() + ")";
        }
        if (faults == null) {
            label += configFile != null ? " [default for --config]" : " [default]";
        }
        if (!spec.isEmpty()) {
            label += faultsAtSetup ? " also at set-up" : " after set-up";
        }
        return label;
    }

    private String stackLabel() {
        return configFile != null ? "config " + configFile + " (" + drivesLabel() + ")" : "stack " + stack;
    }

    /** The driven devices as {@code device NAME} or {@code devices A, B (read-only)}. */
    private String drivesLabel() {
        List<String> names = new ArrayList<>();
        for (ConfigStack.Drive d : drives) {
            names.add(d.device() + (d.readOnly() ? " (read-only)" : ""));
        }
        return (names.size() == 1 ? "device " : "devices ") + String.join(", ", names);
    }

    private String workloadLabel() {
        if (workloadText != null) {
            return "'" + workloadText + "'";
        }
        BuiltInStack builtIn = configFile == null ? stacks.get(stack) : null;
        return builtIn != null && builtIn.ownWorkload() != null && !"nbd".equals(via) ? "built-in"
                : "'" + WorkloadSpec.DEFAULT_TEXT + "'";
    }

    /** Runs one schedule seed and prints its outcome and knot. */
    private int replayOne(SimRunner runner, Consumer<Kernel> workload, PrintWriter out) {
        SimRunner one = traceFile == null ? runner : new SimRunner(runner.config().withTraceFile(traceFile));
        SimResult r = one.runOnce(replay, workload);
        out.println("replay: " + r.summary());
        if (r.isFinding()) {
            out.println(r.explanation());
        }
        if (traceFile != null) {
            out.println("trace: " + r.events() + " events written to " + traceFile);
        }
        out.flush();
        return r.isFinding() ? ExitCodes.DEADLOCK : ExitCodes.SUCCESS;
    }

    /** Runs {@code r}'s seed again writing the trace, and says whether the hash matched. */
    private void writeTrace(SimConfig config, SimResult r, Consumer<Kernel> workload, PrintWriter out) {
        SimConfig traced = config.withTraceFile(traceFile);
        if (r.pctStepBound() > 0) {
            traced = traced.withPctStepBound(r.pctStepBound());
        }
        SimResult again = new SimRunner(traced).runOnce(r.seed(), workload);
        out.println("trace: seed " + r.seed() + ", " + again.events() + " events written to " + traceFile
                + (again.traceHash() == r.traceHash() ? " (same trace hash as the campaign's run)"
                        : " (TRACE HASH DIFFERS from the campaign's run: the stack is not deterministic)"));
    }

    /** A progress bar on stderr, or null when disabled or stderr is not a terminal. */
    private ProgressBar progressBar() {
        if (noProgress || schedules < 2 || !onTerminal()) {
            return null;
        }
        PrintStream err = System.err;
        return new ProgressBarBuilder().setTaskName("check").setInitialMax(schedules).setStyle(ProgressBarStyle.ASCII)
                .setUpdateIntervalMillis(250).setConsumer(new ConsoleProgressBarConsumer(err)).showSpeed().build();
    }

    /** Whether the JVM runs on a terminal (Console.isTerminal on JDK 22+, a console at all before). */
    static boolean onTerminal() {
        java.io.Console console = System.console();
        if (console == null) {
            return false;
        }
        try {
            Method isTerminal = java.io.Console.class.getMethod("isTerminal");
            return (Boolean) isTerminal.invoke(console);
        } catch (ReflectiveOperationException e) {
            return true;
        }
    }

    /** Prints speed, findings by kind with replay commands, coverage, the vacuity flag and the first knot. */
    private void printSummary(SimRunner runner, SimRunner.CampaignResult c, PrintWriter out) {
        out.printf("schedules %d (%d at a time), %.1f schedules/s, %.0f decisions/s, %.0f steps/s, %d steps, %d decisions%n",
                c.schedules(), runner.parallelJobs(), c.schedulesPerSecond(), c.decisionsPerSecond(),
                c.elapsedNanos() == 0 ? 0.0 : c.steps() * 1e9 / c.elapsedNanos(), c.steps(), c.decisions());
        out.println("outcomes: " + c.outcomes());
        Map<Outcome, List<SimResult>> byKind = new LinkedHashMap<>();
        for (SimResult r : c.findings()) {
            byKind.computeIfAbsent(r.outcome(), k -> new ArrayList<>()).add(r);
        }
        out.println("findings: " + c.findingCount());
        for (Map.Entry<Outcome, List<SimResult>> e : byKind.entrySet()) {
            out.println("  " + e.getKey() + ": " + c.outcomes().get(e.getKey()));
            for (SimResult r : e.getValue().subList(0, Math.min(REPLAYS_SHOWN_MAX, e.getValue().size()))) {
                out.println("    replay: " + replayCommand(r));
            }
        }
        if (checkDeterminism) {
            out.println(c.nondeterministicSeeds().isEmpty()
                    ? "determinism: every seed ran twice with the same trace hash"
                    : "NONDETERMINISTIC: seeds " + c.nondeterministicSeeds() + " gave different traces on two runs");
        }
        StringBuilder coverage = new StringBuilder("coverage:");
        for (String name : Coverage.COUNTERS) {
            coverage.append(' ').append(name).append('=').append(c.counters().getOrDefault(name, 0L));
        }
        // The workload's own counters (operation kinds, control events, a refused stack) and the
        // simulated NBD servers' (connects, reconnects, drops, crashes, refusals, delays), when they happened.
        c.counters().forEach((name, value) -> {
            if ((name.startsWith("workload.") || name.startsWith(SimNbdServer.COUNTER_PREFIX)) && value > 0) {
                coverage.append(' ').append(name).append('=').append(value);
            }
        });
        out.println(coverage);
        out.println("faults: " + faultsLabel(runner.config()));
        out.println("fault fires: " + (c.faultFires().isEmpty() ? "none" : c.faultFires()));
        long reserveUsed = c.counters().getOrDefault("mempool.reserve-used", 0L);
        long fires = c.faultFires().values().stream().mapToLong(Long::longValue).sum();
        if (reserveUsed == 0 && fires == 0) {
            out.println("VACUOUS: no reserve was used and no fault fired; the campaign explored nothing under pressure"
                    + " (use a smaller --memory, pressure=on in the workload, or --faults)");
        }
        SimResult first = c.firstFinding();
        if (first != null) {
            out.println("first finding, " + first.summary() + ":");
            out.println(first.explanation());
        }
    }

    /** The one-line command that replays {@code r} with this campaign's options. */
    private String replayCommand(SimResult r) {
        StringBuilder sb = new StringBuilder("blkstack check");
        if (configFile != null) {
            sb.append(" --config ").append(configFile);
            for (String e : exportNames) {
                sb.append(" --export ").append(e);
            }
            for (String d : deviceNames) {
                sb.append(" --device ").append(d);
            }
        } else {
            sb.append(" --stack ").append(stack);
        }
        if (workloadText != null) {
            sb.append(" --workload '").append(workloadText).append('\'');
        }
        if ("nbd".equals(via)) {
            sb.append(" --via nbd");
        }
        sb.append(" --replay ").append(r.seed()).append(" --strategy ").append(strategy).append(" --memory ")
                .append(memoryBytes).append(" --faults '").append(effectiveFaults()).append('\'');
        if (faultsAtSetup) {
            sb.append(" --faults-at-setup");
        }
        if (r.pctStepBound() > 0) {
            sb.append(" --pct-bound ").append(r.pctStepBound());
        }
        for (String p : policies) {
            sb.append(" --policy ").append(p);
        }
        return sb.toString();
    }

    private ParameterException usage(String message) {
        return new ParameterException(spec.commandLine(), message);
    }
}
