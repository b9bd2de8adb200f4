package io.blkstack.sim;

import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Fault injection for one simulated run, driven by the run's {@link SimRandom}.
 *
 * <p>A {@link Spec} is a comma-separated list of rules over the fault sites of {@link Faults}:
 * <ul>
 *   <li>{@code SITE=P}: fail each attempt at SITE with probability P (0..1);</li>
 *   <li>{@code SITE@N}: fail exactly the N-th attempt at SITE (1-based), for systematic sweeps;</li>
 *   <li>{@code latency:DEV=P/MAX}: with probability P add a latency uniform in [0, MAX]
 *       ({@code ns}, {@code us}, {@code ms} or {@code s});</li>
 *   <li>{@code swarm}: each run enables a random half of the rules, so rare combinations occur;
 *       {@code swarm} alone does so over the {@link Spec#DEFAULT_SET default fault set}.</li>
 * </ul>
 * A SITE ending in {@code *} matches every site with that prefix ({@code alloc:*}). Sites no rule
 * matches draw nothing from the stream, so adding a site to the code does not change other runs.
 * Attempts and fires are counted per site for the campaign's coverage report.
 *
 * <p>A workload may mark the building of its stack ({@link #setupBegins}, {@link #setupEnds}); with
 * faults off at set-up ({@link SimConfig#faultsAtSetup} false) every site answers "no fault" there,
 * draws nothing and counts nothing, so {@code SITE@N} counts attempts after set-up.
 */
public final class SimFaults implements Faults {

    /** One parsed rule. */
    record Rule(String pattern, double probability, long nth, long latencyMaxNanos, boolean late) {

        Rule(String pattern, double probability, long nth, long latencyMaxNanos) {
            this(pattern, probability, nth, latencyMaxNanos, false);
        }

        /** The same rule, enabled or not by a swarm draw when its site is first asked. */
        Rule asLate() {
            return new Rule(pattern, probability, nth, latencyMaxNanos, true);
        }

        /** The rule as it would be written. */
        String text() {
            if (nth > 0) {
                return pattern + "@" + nth;
            }
            return pattern + "=" + stripZeros(probability) + (isLatency() ? "/" + durationText(latencyMaxNanos) : "");
        }

        /** {@code 200us}, {@code 5ms}, {@code 2s} or nanoseconds, as {@link Spec#parseDuration} reads them. */
        private static String durationText(long nanos) {
            if (nanos % 1_000_000_000L == 0) {
                return nanos / 1_000_000_000L + "s";
            }
            if (nanos % 1_000_000L == 0) {
                return nanos / 1_000_000L + "ms";
            }
            return nanos % 1_000L == 0 ? nanos / 1_000L + "us" : nanos + "ns";
        }

        private static String stripZeros(double p) {
            String s = Double.toString(p);
            return s.endsWith(".0") ? s.substring(0, s.length() - 2) : s;
        }

        boolean matches(String site) {
            return pattern.endsWith("*") ? site.startsWith(pattern.substring(0, pattern.length() - 1)) : site.equals(pattern);
        }

        boolean isLatency() {
            return latencyMaxNanos > 0;
        }
    }

    /** A parsed fault specification; immutable, shared by the runs of a campaign. */
    public static final class Spec {
        /** No faults. */
        public static final Spec NONE = new Spec("", List.of(), false);

        /**
         * The default fault set, which {@code swarm} alone thins per run: non-blocking allocations
         * fail now and then (pages and every pool), workqueue worker creation fails, device I/O fails
         * rarely with EIO, and half the device I/Os take up to 200 us longer. Each is a condition the
         * forward-progress rules must survive; none of them may turn into a finding on a correct stack.
         */
        public static final String DEFAULT_SET = "alloc:*=0.02,worker-create=0.05,io:*=0.001,latency:*=0.5/200us";

        /**
         * The simulated NBD server's faults, which {@code swarm} alone adds to the default set: a
         * connection drops at one of the three points a request is asked at (before it is carried
         * out, before its reply, in the middle of its reply), a drop is also a crash of the server
         * that loses its unflushed writes, a connect is refused, and a reply is delayed by up to 15 s
         * (past a remote device's timeout when that is shorter). Only stacks with {@code nbd:}
         * devices have these sites. Each rule is enabled with probability 1/2, drawn when its site is
         * first asked, so runs of stacks without them draw exactly as before.
         */
        public static final String REMOTE_SET = "nbd-drop:*=0.01,nbd-lose:*=0.3,nbd-refuse:*=0.5,latency:nbd:*=0.02/15s";

        private final String text;
        private final List<Rule> rules;
        private final boolean swarm;

        private Spec(String text, List<Rule> rules, boolean swarm) {
            this.text = text;
            this.rules = rules;
            this.swarm = swarm;
        }

        /** Parses a specification; an empty or null text means no faults. */
        public static Spec parse(String text) {
            if (text == null || text.isBlank()) {
                return NONE;
            }
            List<Rule> rules = new ArrayList<>();
            boolean swarm = false;
            for (String raw : text.split(",")) {
                String entry = raw.trim();
                if (entry.isEmpty()) {
                    continue;
                }
                if (entry.equals("swarm")) {
                    swarm = true;
                } else {
                    rules.add(parseRule(entry));
                }
            }
            if (swarm && rules.isEmpty()) {
                for (String entry : DEFAULT_SET.split(",")) {
                    rules.add(parseRule(entry));
                }
                for (String entry : REMOTE_SET.split(",")) {
                    rules.add(parseRule(entry).asLate());
                }
            }
            return new Spec(text.trim(), List.copyOf(rules), swarm);
        }

        private static Rule parseRule(String entry) {
            int eq = entry.lastIndexOf('=');
            int at = entry.lastIndexOf('@');
            if (at > 0 && eq < 0) {
                long n = parseLong(entry, entry.substring(at + 1));
                if (n < 1) {
                    throw new IllegalArgumentException("fault rule '" + entry + "': attempt number must be >= 1, not " + n);
                }
                return new Rule(entry.substring(0, at), 0, n, 0);
            }
            if (eq <= 0) {
                throw new IllegalArgumentException("fault rule '" + entry + "' is not SITE=P, SITE@N or latency:DEV=P/MAX");
            }
            String site = entry.substring(0, eq);
            String value = entry.substring(eq + 1);
            if (site.startsWith("latency:")) {
                int slash = value.indexOf('/');
                if (slash < 0) {
                    throw new IllegalArgumentException("fault rule '" + entry + "': latency needs P/MAX, e.g. 0.1/5ms");
                }
                long max = parseDuration(entry, value.substring(slash + 1));
                return new Rule(site, parseProbability(entry, value.substring(0, slash)), 0, Math.max(1, max));
            }
            return new Rule(site, parseProbability(entry, value), 0, 0);
        }

        private static double parseProbability(String entry, String v) {
            double p;
            try {
                p = Double.parseDouble(v);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("fault rule '" + entry + "': '" + v + "' is not a probability");
            }
            if (!(p >= 0 && p <= 1)) {
                throw new IllegalArgumentException("fault rule '" + entry + "': probability must be in [0, 1], not " + p);
            }
            return p;
        }

        private static long parseLong(String entry, String v) {
            try {
                return Long.parseLong(v);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("fault rule '" + entry + "': '" + v + "' is not a number");
            }
        }

        /** Parses {@code 100us}, {@code 5ms}, {@code 2s} or plain nanoseconds. */
        static long parseDuration(String entry, String v) {
            String s = v.trim();
            long unit = 1;
            if (s.endsWith("ns")) {
                s = s.substring(0, s.length() - 2);
            } else if (s.endsWith("us")) {
                unit = 1_000L;
                s = s.substring(0, s.length() - 2);
            } else if (s.endsWith("ms")) {
                unit = 1_000_000L;
                s = s.substring(0, s.length() - 2);
            } else if (s.endsWith("s")) {
                unit = 1_000_000_000L;
                s = s.substring(0, s.length() - 1);
            }
            return parseLong(entry, s) * unit;
        }

        List<Rule> rules() {
            return rules;
        }

        public boolean swarm() {
            return swarm;
        }

        public boolean isEmpty() {
            return rules.isEmpty();
        }

        /** The text, and the rules {@code swarm} alone stands for: what a summary names. */
        public String describe() {
            if (rules.isEmpty()) {
                return "none";
            }
            return swarm ? "swarm over " + ruleText() + " (a random half per run)" : text;
        }

        /** The rules as a specification without {@code swarm}. */
        String ruleText() {
            StringBuilder sb = new StringBuilder();
            for (Rule r : rules) {
                if (!sb.isEmpty()) {
                    sb.append(',');
                }
                sb.append(r.text());
            }
            return sb.toString();
        }

        @Override
        public String toString() {
            return text;
        }
    }

    private final SimRandom random;
    private final SimTrace trace;
    private final List<Rule> enabled;
    /** Late rules ({@link Rule#late}) by whether their swarm draw enabled them, once drawn. */
    private final Map<Rule, Boolean> lateDraws = new java.util.IdentityHashMap<>();
    private final Map<String, long[]> counts = new TreeMap<>();
    private final boolean atSetup;
    private boolean inSetup;

    /** The faults of one run, firing at set-up too; in swarm mode this draws which half of the rules is enabled. */
    public SimFaults(Spec spec, SimRandom random, SimTrace trace) {
        this(spec, random, trace, true);
    }

    /** As {@link #SimFaults(Spec, SimRandom, SimTrace)}; {@code atSetup} false keeps faults off while a stack is built. */
    public SimFaults(Spec spec, SimRandom random, SimTrace trace, boolean atSetup) {
        this.atSetup = atSetup;
        this.random = random;
        this.trace = trace;
        List<Rule> rules = new ArrayList<>();
        List<Rule> late = new ArrayList<>();
        for (Rule r : spec.rules()) {
            (r.late() ? late : rules).add(r);
        }
        if (spec.swarm() && rules.size() > 1) {
            for (int i = rules.size() - 1; i > 0; i--) {
                int j = random.nextInt(i + 1);
                Rule tmp = rules.get(i);
                rules.set(i, rules.get(j));
                rules.set(j, tmp);
            }
            rules = new ArrayList<>(rules.subList(0, (rules.size() + 1) / 2));
            StringBuilder sb = new StringBuilder();
            for (Rule r : rules) {
                sb.append(r.pattern()).append(' ');
            }
            trace.record("sim", "swarm", sb.toString().trim());
        }
        rules.addAll(late);
        this.enabled = List.copyOf(rules);
    }

    /**
     * Marks the start of {@code kernel}'s stack set-up (a no-op outside the simulator): until
     * {@link #setupEnds}, faults are off unless the run allows them at set-up.
     */
    public static void setupBegins(Kernel kernel) {
        if (kernel.faults() instanceof SimFaults f) {
            f.setInSetup(true);
        }
    }

    /** Marks the end of {@code kernel}'s stack set-up: faults fire from here on. */
    public static void setupEnds(Kernel kernel) {
        if (kernel.faults() instanceof SimFaults f) {
            f.setInSetup(false);
        }
    }

    /** Whether {@code kernel}'s stack set-up is marked as in progress now (false outside the simulator). */
    public static boolean inSetup(Kernel kernel) {
        return kernel.faults() instanceof SimFaults f && f.isInSetup();
    }

    private synchronized boolean isInSetup() {
        return inSetup;
    }

    private synchronized void setInSetup(boolean value) {
        if (!atSetup && inSetup != value) {
            trace.record("sim", value ? "faults-off" : "faults-on", "set-up");
        }
        inSetup = value;
    }

    /** Whether faults are held off now (set-up in progress and not allowed there). */
    private boolean heldOff() {
        return inSetup && !atSetup;
    }

    @Override
    public synchronized boolean shouldFail(String site) {
        if (heldOff()) {
            return false;
        }
        long[] c = counts.computeIfAbsent(site, s -> new long[2]);
        long attempt = ++c[0];
        for (Rule r : enabled) {
            if (r.isLatency() || !r.matches(site) || !drawnOn(r, site)) {
                continue;
            }
            boolean fail = r.nth() > 0 ? attempt == r.nth() : random.chance(r.probability());
            if (fail) {
                c[1]++;
                trace.record("sim", "fault", site + " #" + attempt);
                return true;
            }
        }
        return false;
    }

    @Override
    public synchronized long extraLatencyNanos(String site) {
        if (heldOff()) {
            return 0;
        }
        long[] c = counts.computeIfAbsent(site, s -> new long[2]);
        c[0]++;
        for (Rule r : enabled) {
            if (r.isLatency() && r.matches(site) && drawnOn(r, site) && random.chance(r.probability())) {
                long extra = random.latencyNanos(0, r.latencyMaxNanos());
                c[1]++;
                trace.record("sim", "latency", site + " +" + extra + "ns");
                return extra;
            }
        }
        return 0;
    }

    /** Whether rule {@code r} is on: always for an ordinary rule; a late one draws its half the first time. */
    private boolean drawnOn(Rule r, String site) {
        if (!r.late()) {
            return true;
        }
        Boolean on = lateDraws.get(r);
        if (on == null) {
            on = random.chance(0.5);
            lateDraws.put(r, on);
            trace.record("sim", "swarm-late", r.pattern() + (on ? " on" : " off") + " at " + site);
        }
        return on;
    }

    /** How often each site fired, by site name (sites asked but never fired show 0). */
    public synchronized Map<String, Long> fires() {
        Map<String, Long> map = new TreeMap<>();
        counts.forEach((k, v) -> map.put(k, v[1]));
        return map;
    }

    /** How often each site was asked. */
    public synchronized Map<String, Long> attempts() {
        Map<String, Long> map = new TreeMap<>();
        counts.forEach((k, v) -> map.put(k, v[0]));
        return map;
    }

    /** The rule patterns enabled in this run (all of them unless swarm; a late rule once drawn on). */
    public synchronized List<String> enabledSites() {
        List<String> list = new ArrayList<>();
        for (Rule r : enabled) {
            if (!r.late() || Boolean.TRUE.equals(lateDraws.get(r))) {
                list.add(r.pattern());
            }
        }
        return list;
    }
}
