package io.blkstack.sim;

/**
 * A scheduling strategy as configured: {@code random} or {@code pct:D}. PCT also needs a bound on
 * the number of decisions a run takes, which the runner learns from earlier runs and records in
 * each result so that a replay uses the same bound.
 */
public final class StrategySpec {

    /** The default decision bound for PCT before any run was seen. */
    static final long INITIAL_BOUND = 64;

    private final String text;
    private final int pctDepth;

    private StrategySpec(String text, int pctDepth) {
        this.text = text;
        this.pctDepth = pctDepth;
    }

    /** Parses {@code random} or {@code pct:D} with {@code 1 <= D <= 64}. */
    public static StrategySpec parse(String text) {
        String t = text.trim();
        if (t.equals("random")) {
            return new StrategySpec(t, 0);
        }
        if (t.startsWith("pct:")) {
            int depth;
            try {
                depth = Integer.parseInt(t.substring(4));
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("strategy '" + text + "': PCT depth is not a number");
            }
            if (depth < 1 || depth > 64) {
                throw new IllegalArgumentException("strategy '" + text + "': PCT depth must be 1..64, not " + depth);
            }
            return new StrategySpec(t, depth);
        }
        throw new IllegalArgumentException("strategy '" + text + "' is not 'random' or 'pct:D'");
    }

    /** The strategy for one run; {@code stepBound} is PCT's decision bound (ignored by random). */
    Strategy start(SimRandom random, long stepBound) {
        return pctDepth == 0 ? new RandomStrategy(random) : new PctStrategy(random, pctDepth, stepBound);
    }

    /** Whether this is PCT (which uses a decision bound). */
    public boolean isPct() {
        return pctDepth > 0;
    }

    @Override
    public String toString() {
        return text;
    }
}
