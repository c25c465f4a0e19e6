package org.referraladapter.validator;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.context.support.ValidationSupportContext;
import ca.uhn.fhir.parser.IParser;
import ca.uhn.fhir.parser.StrictErrorHandler;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.PrePopulatedValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.r4.model.StructureDefinition;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Writes the snapshot of each StructureDefinition file given, generated from its differential
 * and its base definition (the R4 core, or another profile in the --ig directories), back into
 * the file. Run after editing a profile's differential; a test checks the committed snapshots
 * are what this generates.
 *
 * <p>usage: validate.sh snapshot [--ig DIR]... [--check] FILE...; with --check nothing is
 * written and the exit status is 1 when any file's snapshot differs from the generated one.
 */
final class SnapshotCli {

	private SnapshotCli() {}

	static int run(String[] args, PrintStream theOut, PrintStream theErr) {
		List<Path> igDirectories = new ArrayList<>();
		List<Path> files = new ArrayList<>();
		boolean check = false;
		for (int i = 0; i < args.length; i++) {
			switch (args[i]) {
				case "--ig" -> {
					if (i + 1 >= args.length) {
						theErr.println("fhir-validator: --ig needs a directory");
						return 2;
					}
					igDirectories.add(Path.of(args[++i]));
				}
				case "--check" -> check = true;
				default -> files.add(Path.of(args[i]));
			}
		}
		if (files.isEmpty()) {
			theErr.println("usage: validate.sh snapshot [--ig DIR]... [--check] FILE...");
			return 2;
		}
		FhirContext context = FhirContext.forR4();
		IParser parser = context.newJsonParser().setParserErrorHandler(new StrictErrorHandler());
		IParser printer = context.newJsonParser().setPrettyPrint(true);
		int stale = 0;
		try {
			PrePopulatedValidationSupport igSupport = new PrePopulatedValidationSupport(context);
			ConformanceLoader loader = new ConformanceLoader(context, theErr);
			for (Path dir : igDirectories) {
				loader.load(dir, igSupport);
			}
			SnapshotGeneratingValidationSupport generator = new SnapshotGeneratingValidationSupport(context);
			ValidationSupportChain chain = new ValidationSupportChain(
					new DefaultProfileValidationSupport(context),
					igSupport,
					new CommonCodeSystemsTerminologyService(context),
					new InMemoryTerminologyServerValidationSupport(context),
					generator);
			for (Path file : files) {
				String before = Files.readString(file, StandardCharsets.UTF_8);
				StructureDefinition profile = (StructureDefinition) parser.parseResource(before);
				profile.setSnapshot(null);
				StructureDefinition generated = (StructureDefinition) generator.generateSnapshot(
						new ValidationSupportContext(chain), profile, profile.getUrl(), null, profile.getName());
				if (generated == null || generated.getSnapshot().getElement().isEmpty()) {
					theErr.println("fhir-validator: no snapshot generated for " + file);
					return 1;
				}
				String after = printer.encodeResourceToString(generated) + "\n";
				if (after.equals(before)) {
					theOut.println("up to date: " + file);
				} else if (check) {
					theOut.println("stale: " + file);
					stale++;
				} else {
					Files.writeString(file, after, StandardCharsets.UTF_8);
					theOut.println("wrote: " + file);
				}
			}
		} catch (IOException | RuntimeException e) {
			theErr.println("fhir-validator: error: " + e.getMessage());
			return 2;
		}
		return stale == 0 ? 0 : 1;
	}
}
