package org.referraladapter.validator;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationOptions;
import ca.uhn.fhir.validation.ValidationResult;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.PrePopulatedValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.UnknownCodeSystemWarningValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;
import org.hl7.fhir.r4.model.OperationOutcome;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Validates FHIR R4 JSON resources offline against the core specification and the conformance
 * resources in the --ig directories. No terminology server and no network: code systems other
 * than the core ones and those in the --ig directories are reported as warnings, not errors.
 *
 * <p>Prints one JSON object per input on stdout, one line each:
 * {"file": PATH, "valid": BOOL, "errors": N, "warnings": N, "outcome": OperationOutcome}.
 * "valid" is false when any issue has severity error or fatal.
 *
 * <p>Exit status: 0 when every input is valid, 1 when any is not (or cannot be read), 2 on a usage
 * error. With --stdin it reads one input per line until end of input (a file path, or a whole
 * resource as one line of JSON, reported with "file": null), answers each with one line, and
 * exits 0.
 */
public final class ValidateCli {

	static final String USAGE = String.join(
			"\n",
			"usage: validate.sh [--ig DIR]... [--profile URL]... (FILE... | --stdin)",
			"  --ig DIR       load StructureDefinitions, CodeSystems, ValueSets, SearchParameters",
			"                 from the JSON files under DIR (repeatable)",
			"  --profile URL  also validate every input against this profile (repeatable)",
			"  --stdin        read file paths (or one-line JSON resources) from stdin, one per line,",
			"                 and answer each with one line; for callers that keep the JVM running",
			"Output: one JSON line per input: {\"file\", \"valid\", \"errors\", \"warnings\", \"outcome\"}.",
			"Exit: 0 all valid, 1 some input invalid or unreadable, 2 usage error.");

	private final FhirContext myContext;
	private final FhirValidator myValidator;
	private final ValidationOptions myOptions;
	private final ObjectMapper myMapper = new ObjectMapper();

	ValidateCli(FhirContext theContext, List<Path> theIgDirectories, List<String> theProfiles, PrintStream theLog)
			throws IOException {
		myContext = theContext;
		PrePopulatedValidationSupport igSupport = new PrePopulatedValidationSupport(theContext);
		ConformanceLoader loader = new ConformanceLoader(theContext, theLog);
		for (Path dir : theIgDirectories) {
			loader.load(dir, igSupport);
		}

		UnknownCodeSystemWarningValidationSupport unknownCodeSystems =
				new UnknownCodeSystemWarningValidationSupport(theContext);
		unknownCodeSystems.setNonExistentCodeSystemSeverity(IValidationSupport.IssueSeverity.WARNING);

		// Order matters: the first module that knows a resource or code answers.
		ValidationSupportChain chain = new ValidationSupportChain(
				new DefaultProfileValidationSupport(theContext),
				igSupport,
				new CommonCodeSystemsTerminologyService(theContext),
				new InMemoryTerminologyServerValidationSupport(theContext),
				new SnapshotGeneratingValidationSupport(theContext),
				unknownCodeSystems);

		FhirInstanceValidator instanceValidator = new FhirInstanceValidator(chain);
		// A meta.profile we do not have is a mistake in what we write, not something to skip.
		instanceValidator.setErrorForUnknownProfiles(true);
		instanceValidator.setAnyExtensionsAllowed(true);

		myValidator = theContext.newValidator();
		myValidator.setValidateAgainstStandardSchema(false);
		myValidator.setValidateAgainstStandardSchematron(false);
		myValidator.registerValidatorModule(instanceValidator);

		myOptions = new ValidationOptions();
		theProfiles.forEach(myOptions::addProfile);
	}

	/** One result line for a resource text; theFile is null for inline input. */
	Result validateText(String theFile, String theJson) {
		ValidationResult result = myValidator.validateWithResult(theJson, myOptions);
		int errors = 0;
		int warnings = 0;
		for (SingleValidationMessage message : result.getMessages()) {
			ResultSeverityEnum severity = message.getSeverity();
			if (severity == ResultSeverityEnum.ERROR || severity == ResultSeverityEnum.FATAL) {
				errors++;
			} else if (severity == ResultSeverityEnum.WARNING) {
				warnings++;
			}
		}
		String outcome = myContext.newJsonParser().encodeResourceToString(result.toOperationOutcome());
		return new Result(line(theFile, errors, warnings, outcome), errors == 0);
	}

	Result validateFile(String thePath) {
		String text;
		try {
			text = Files.readString(Path.of(thePath), StandardCharsets.UTF_8);
		} catch (IOException | RuntimeException e) {
			OperationOutcome outcome = new OperationOutcome();
			outcome.addIssue()
					.setSeverity(OperationOutcome.IssueSeverity.FATAL)
					.setCode(OperationOutcome.IssueType.NOTFOUND)
					.setDiagnostics("cannot read " + thePath + ": " + e);
			return new Result(line(thePath, 1, 0, myContext.newJsonParser().encodeResourceToString(outcome)), false);
		}
		return validateText(thePath, text);
	}

	private String line(String theFile, int theErrors, int theWarnings, String theOutcomeJson) {
		try {
			ObjectNode node = myMapper.createObjectNode();
			node.put("file", theFile);
			node.put("valid", theErrors == 0);
			node.put("errors", theErrors);
			node.put("warnings", theWarnings);
			node.set("outcome", myMapper.readTree(theOutcomeJson));
			return myMapper.writeValueAsString(node);
		} catch (IOException e) {
			throw new IllegalStateException("cannot encode the result", e);
		}
	}

	record Result(String line, boolean valid) {}

	public static void main(String[] args) {
		System.exit(run(args, System.out, System.err));
	}

	static int run(String[] args, PrintStream theOut, PrintStream theErr) {
		if (args.length > 0 && args[0].equals("snapshot")) {
			return SnapshotCli.run(java.util.Arrays.copyOfRange(args, 1, args.length), theOut, theErr);
		}
		List<Path> igDirectories = new ArrayList<>();
		List<String> profiles = new ArrayList<>();
		List<String> files = new ArrayList<>();
		boolean stdin = false;
		for (int i = 0; i < args.length; i++) {
			String arg = args[i];
			switch (arg) {
				case "--ig", "--profile" -> {
					if (i + 1 >= args.length) {
						return usage(theErr, arg + " needs a value");
					}
					String value = args[++i];
					if (arg.equals("--ig")) {
						Path dir = Path.of(value);
						if (!Files.isDirectory(dir)) {
							return usage(theErr, "--ig " + value + ": not a directory");
						}
						igDirectories.add(dir);
					} else {
						profiles.add(value);
					}
				}
				case "--stdin" -> stdin = true;
				case "-h", "--help" -> {
					theOut.println(USAGE);
					return 0;
				}
				default -> {
					if (arg.startsWith("--")) {
						return usage(theErr, "unknown option " + arg);
					}
					files.add(arg);
				}
			}
		}
		if (stdin == !files.isEmpty()) {
			return usage(theErr, stdin ? "give files or --stdin, not both" : "no input files");
		}

		ValidateCli cli;
		try {
			cli = new ValidateCli(FhirContext.forR4(), igDirectories, profiles, theErr);
		} catch (IOException | IllegalArgumentException e) {
			theErr.println("fhir-validator: error: " + e.getMessage());
			return 2;
		}

		if (stdin) {
			return cli.serve(theOut);
		}
		boolean allValid = true;
		for (String file : files) {
			Result result = cli.validateFile(file);
			theOut.println(result.line());
			allValid &= result.valid();
		}
		theOut.flush();
		return allValid ? 0 : 1;
	}

	private int serve(PrintStream theOut) {
		try (BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
			String line;
			while ((line = in.readLine()) != null) {
				String request = line.strip();
				if (request.isEmpty()) {
					continue;
				}
				Result result = request.startsWith("{") ? validateText(null, request) : validateFile(request);
				theOut.println(result.line());
				theOut.flush();
			}
		} catch (IOException e) {
			System.err.println("fhir-validator: error reading stdin: " + e.getMessage());
			return 2;
		}
		return 0;
	}

	private static int usage(PrintStream theErr, String theProblem) {
		theErr.println("fhir-validator: " + theProblem);
		theErr.println(USAGE);
		return 2;
	}
}
